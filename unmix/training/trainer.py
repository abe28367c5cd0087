"""The training loop: AdamW with warm-up, gradient clipping and accumulation, EMA, checkpoints, resume, DDP.

    run = start(TrainConfig(data="digits", steps=2000))      # or resume("runs/digits", steps=4000, lr=5e-4)
    result = run.train()                                      # -> TrainResult(checkpoint, step, stopped_by, ...)

Invariants the loop keeps (and the tests check):
- One global batch per step is drawn from a single seeded generator and only then split across ranks and
  accumulation rounds (unmix.training.step, which holds TrainState and train_step): the run does not depend on
  how the work is divided.
- A checkpoint is taken after the step's EMA update and holds the generator state, so interrupted and resumed
  equals uninterrupted, bit for bit on CPU.
- Under torchrun each rank computes its share, DDP averages gradients, and rank 0 alone writes logs, previews and
  checkpoints, holding the run folder's lock.
"""
from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from unmix.data import Dataset, load_dataset
from unmix.distributed import cpu_threads, init_distributed, pick_device
from unmix.encoders import encoder_for_run
from unmix.errors import UnmixError
from unmix.model import Model, rebuild
from unmix.nets import build_net
from unmix.store import checkpoint as ckpt
from unmix.text.bank import caption_bank
from unmix.text.encoder import load_text_encoder
from unmix.training.config import RESCUE_KEYS, RUNTIME_KEYS, TrainConfig, check_config, default_out, resolve, run_preset
from unmix.training.launch import warn_lone_launch
from unmix.training.log import (
    ESTIMATE_STEPS,
    StepStats,
    Stop,
    append_log,
    estimate_lines,
    progress_bar,
    truncate_log,
    version,
)
from unmix.training.objectives import LAYOUT_ROWS, DiffusionObjective, ImageCondObjective, TextDiffusionObjective
from unmix.training.preview import preview_grid, save_preview
from unmix.training.runlock import RunLock, ensure_free
from unmix.training.step import TrainState, train_step

# The grid that ends a run (unless it fell on a --sample-every step) draws only the rows of 8 that fit in this
# many seconds: a short run stays short (a 10M-parameter U-Net's full 64-image grid takes a minute on a CPU).
FINAL_PREVIEW_SECONDS = 10.0


@dataclass
class TrainResult:
    checkpoint: Path | None
    step: int
    stopped_by: str  # "steps" | "minutes" | "SIGINT" | "SIGTERM"
    last_stats: dict = field(default_factory=dict)


class Run:
    """A resolved run, ready to train: config, dataset, network config, objective, device. Build it with
    `start` (new run, optionally from trained weights) or `resume` (continue a run folder), which check the config."""

    def __init__(self, config: TrainConfig, dataset: Dataset | None, resume_from: ckpt.Checkpoint | None = None,
                 init_from: ckpt.Checkpoint | None = None, objective=None):
        self.dist = init_distributed(config.device)
        self.device = pick_device(config.device, self.dist)
        if self.dist.main:  # another training writing into out= is refused before any data is read or line printed
            ensure_free(config.out or default_out(config.data))
        warn_lone_launch(self.dist.rank)  # a launcher asked for N processes but started this one alone
        # what the net works on (unmix.encoders): pixels, or an autoencoder's latents; a given dataset is in its space,
        # a loaded one is encoded once and kept in memory
        self.encoder = encoder_for_run(config.latent, resume_from or init_from)
        if dataset is None:
            dataset = self.encoder.encode_dataset(load_dataset(config.data, config.size, config.backgrounds))
        self.dataset = ds = dataset
        stored = resume_from or init_from
        if stored is not None:
            rebuild(stored.config, stored.path)  # a damaged config.json is one clear error before it is used
        self.preset = self.encoder.preset or run_preset(ds.name, self.device.type)
        # how the run prints a note while it trains (the time estimate); the CLI words its settings as flags
        self.note = lambda line: print(line, file=sys.stderr)
        self.config, self.recipe, self.net_config = resolve(config, ds, self.preset,
                                                            stored.config if stored is not None else None)
        cfg = self.config
        if cfg.batch_size % (self.dist.world * cfg.accum):
            raise UnmixError(f"batch_size={cfg.batch_size} must be divisible by processes x accum "
                             f"= {self.dist.world * cfg.accum}")
        self.resume_from, self.init_from, self.last_record = resume_from, init_from, {}
        if stored is not None:
            self._adopt(stored)
        else:
            build_net(self.net_config)  # validates the settings
        if resume_from is None and ckpt.list_checkpoints(cfg.out):
            raise UnmixError(f"{cfg.out} already holds checkpoints; pass resume=True to continue that run, "
                             f"or choose another out=")
        classes = self.net_config.get("num_classes", 0) if cfg.cond == "label" else 0
        self.data_description = self.dataset.describe()
        if objective is None and cfg.cond == "text":
            objective = self._text_objective(stored)
        if objective is None and self.net_config.get("cond_channels"):
            objective = ImageCondObjective(self.recipe, cfg.label_dropout)
        self.objective = objective or DiffusionObjective(self.recipe, classes, cfg.label_dropout, ds)

    def _text_objective(self, stored: ckpt.Checkpoint | None) -> TextDiffusionObjective:
        """Captions -> a bank of cached embeddings from the frozen encoder (the checkpoint's, when continuing)."""
        if self.dataset.captions is None:
            raise UnmixError(f"cond='text' needs captions; {self.dataset.name} has none (use emoji, or a folder with "
                             "NAME.txt sidecars or a metadata.jsonl)")
        recorded = ((stored.config.get("data") or {}).get("text_encoder") or {}) if stored else {}
        encoder = load_text_encoder(self.config.text_encoder or recorded.get("name"))
        if int(self.net_config.get("text_dim", 0)) != encoder.dim:
            raise UnmixError(f"the network takes text embeddings of width {self.net_config.get('text_dim', 0)}, the "
                             f"encoder {encoder.name} gives {encoder.dim}")
        self.data_description["text_encoder"] = encoder.describe()
        bank = caption_bank(self.dataset.captions, encoder).to(self.device)
        rows = LAYOUT_ROWS if self.net_config.get("layout_size") and self.net_config.get("layout") == "mlp" else 0
        return TextDiffusionObjective(self.recipe, bank, self.config.label_dropout, self.dataset, rows)

    def _adopt(self, c: ckpt.Checkpoint) -> None:
        """Check a checkpoint whose network and recipe this run takes (resume or fine-tune) against this data."""
        stored, ds = c.config, self.dataset
        shape = list(ds.describe()["shape"])  # a latent dataset describes its images
        if list((stored.get("data") or {}).get("shape", [])) != shape:
            raise UnmixError(f"the dataset gives items of shape {shape}, but {c.path} was trained on "
                             f"{(stored.get('data') or {}).get('shape')}")
        classes = int(self.net_config.get("num_classes", 0))
        if self.config.cond == "label" and classes != ds.num_classes:
            raise UnmixError(f"{c.path} was trained with {classes} classes, the dataset has {ds.num_classes}; "
                             "class-conditional fine-tuning needs the same classes (or cond='none')")
        if self.init_from is not None and self.config.net:
            raise UnmixError("init= keeps the checkpoint's network; drop the network settings (net=)")

    def describe(self) -> dict:
        """The fully resolved run, as --dry-run prints it."""
        net = build_net(self.net_config)
        return {
            "train": asdict(self.config), "net": self.net_config,
            "parameters": sum(p.numel() for p in net.parameters()),
            "recipe": self.recipe.to_dict(), "data": self.dataset.describe(), "device": str(self.device),
            "threads": cpu_threads(self.config.threads, self.dist) if self.device.type == "cpu" else None,
            "processes": self.dist.world,
            "resume_from": str(self.resume_from.path) if self.resume_from else None,
            "init_from": str(self.init_from.path) if self.init_from else None,
        }

    def checkpoint_config(self) -> dict:
        return {"net": self.net_config, "recipe": self.recipe.to_dict(), **self.objective.checkpoint_config(),
                **self.encoder.checkpoint_config(), "data": self.data_description, "train": asdict(self.config),
                "unmix_version": version()}

    def train(self, progress: bool = True) -> TrainResult:
        """Train until steps, minutes or a signal; save; return where it stopped (rank 0 holds the folder lock)."""
        with RunLock(self.config.out, enabled=self.dist.main):
            return self._loop(progress)

    def _new_state(self) -> TrainState:
        cfg, d = self.config, self.dist
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads(cfg.threads, d))
        torch.manual_seed(cfg.seed + d.rank)  # dropout; each rank its own stream
        state = TrainState.fresh(build_net(self.net_config).to(self.device), cfg)
        if self.resume_from is not None:
            state.restore(self.resume_from)
            if d.main:
                truncate_log(Path(cfg.out) / "stats.jsonl", state.step)
        elif self.init_from is not None:
            state.net.load_state_dict(self.init_from.weights("model"))
            state.ema.load_state_dict(self.init_from.weights("ema"))
        getattr(self.objective, "prepare", lambda *nets: None)(state.net, state.ema)  # e.g. a retrieval table
        return state

    def _wrapped(self, net: nn.Module) -> nn.Module:
        model = net
        if self.dist.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        return torch.compile(model) if self.config.compile else model

    def _loop(self, progress: bool) -> TrainResult:
        cfg, d = self.config, self.dist
        state = self._new_state()
        model, data = self._wrapped(state.net), self.dataset.to(self.device)
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        stats, start = StepStats(self.device), time.monotonic()
        self.last_good = self.resume_from.path if self.resume_from else None
        bar = progress_bar(progress and d.main, state.step, cfg.steps, cfg.minutes)
        first, timed = state.step, start
        try:  # closed on any exit, so an error line is the last thing printed (no bar redrawn after it)
            with Stop() as stop:
                while not (stopped_by := self._stop_reason(state.step, start, stop)):
                    train_step(state, model, self.objective, data, cfg, d, stats, autocast)
                    bar.update(1)
                    if state.step == first + 1:  # the time estimate times the steps after this one
                        timed = time.monotonic()
                    elif state.step == first + 1 + ESTIMATE_STEPS and progress and d.main:
                        per_step = (time.monotonic() - timed) / ESTIMATE_STEPS
                        with bar.external_write_mode(file=sys.stderr):
                            for line in estimate_lines(per_step, state.step, cfg.steps, cfg.minutes,
                                                       time.monotonic() - start):
                                self.note(line)
                    if state.step % cfg.log_every == 0:
                        bar.set_postfix(loss=f"{self._log(stats, state, start):.4f}")
                    if state.step % cfg.checkpoint_every == 0:
                        self._save(state, stats, start)
                    if state.step % cfg.sample_every == 0 and d.main and cfg.preview:
                        self._preview(state.ema, state.step)
        finally:
            bar.close()
        if self.last_good is None or not self.last_good.name.endswith(f"{state.step:08d}"):
            self._save(state, stats, start)
        if d.main and cfg.preview and state.step % cfg.sample_every != 0 and stopped_by in ("steps", "minutes"):
            self._preview(state.ema, state.step, seconds=FINAL_PREVIEW_SECONDS)
        if d.world > 1:
            dist.barrier()
        self.net, self.ema = state.net, state.ema
        return TrainResult(self.last_good, state.step, stopped_by, self.last_record)

    def _stop_reason(self, step: int, start: float, stop: Stop) -> str | None:
        cfg = self.config
        flags = torch.tensor([cfg.steps is not None and step >= cfg.steps,
                              cfg.minutes is not None and time.monotonic() - start >= cfg.minutes * 60,
                              stop.signal == "SIGINT", stop.signal == "SIGTERM"], dtype=torch.float32)
        if self.dist.world > 1:  # every rank must stop at the same step
            flags = flags.to(self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            flags = flags.cpu()
        hit = [r for r, f in zip(("steps", "minutes", "SIGINT", "SIGTERM"), flags.tolist()) if f]
        return hit[-1] if hit else None

    def _log(self, stats: StepStats, state: TrainState, start: float) -> float:
        """Reduce the stats over ranks, stop on a non-finite loss, write one JSON line (rank 0)."""
        record = stats.reduce(self.dist)
        if not all(math.isfinite(v) for v in (record["loss"], record["grad_norm"])):
            clip = f"grad_clip={self.config.grad_clip / 2:g}" if self.config.grad_clip > 0 else "grad_clip=1"
            kept = (f"the last good checkpoint ({self.last_good}) is untouched; continue from it with a lower "
                    f"learning rate, resume=True, lr={self.config.lr / 4:g}, or a stronger {clip}" if self.last_good
                    else f"no checkpoint was written; start again with a lower lr={self.config.lr / 4:g} or a "
                         f"stronger {clip}")
            raise UnmixError(f"training diverged: non-finite loss or gradient by step {state.step}; {kept}")
        record = {"step": state.step, "kimg": round(state.images / 1000, 3), **record,
                  "lr": state.opt.param_groups[0]["lr"], "seconds": round(time.monotonic() - start, 2)}
        self.last_record = record
        if self.dist.main:
            append_log(Path(self.config.out) / "stats.jsonl", record)
        return record["loss"]

    def _save(self, state: TrainState, stats: StepStats, start: float) -> None:
        if stats.count:  # never save weights that came from a non-finite step
            self._log(stats, state, start)
        path = Path(self.config.out) / f"{ckpt.PREFIX}{state.step:08d}"
        if self.dist.main:
            path = state.save(self.config.out, self.checkpoint_config(), self.config.keep,
                              self.encoder.checkpoint_weights() or None)
        if self.dist.world > 1:
            dist.barrier()
        self.last_good = path

    def _preview(self, ema: nn.Module, step: int, seconds: float | None = None) -> None:
        """The grid of OUT/samples.png (unmix.training.preview), or an objective's own picture (an autoencoder's
        reconstructions)."""
        if hasattr(self.objective, "preview"):
            x = self.objective.preview(ema, self.dataset)
        else:
            model = Model(ema, self.recipe, self.data_description,
                          sampling=self.objective.checkpoint_config().get("sampling"), encoder=self.encoder)
            sampler, nfe = (None, None) if model.sampling else (self.config.sampler, self.config.nfe)
            x = preview_grid(model, self.dataset.is_image, sampler, nfe, self.device, seconds)
        save_preview(x, self.config.out, step, self.dataset.is_image)


def start(config: TrainConfig | None = None, dataset: Dataset | None = None, objective=None) -> Run:
    """A new run (config.init: from a trained checkpoint's weights, with a fresh optimiser). `objective` replaces
    the denoising loss of the config's recipe (see unmix.training.objectives for the contract)."""
    config = config or TrainConfig()
    check_config(config)
    init_from = ckpt.open_checkpoint(config.init) if config.init else None
    return Run(config, dataset, init_from=init_from, objective=objective)


def resume(out: str | Path, dataset: Dataset | None = None, objective=None, **changes) -> Run:
    """Continue the latest checkpoint in `out`, changing only run-time and rescue settings (`changes`); a run
    trained with its own objective is resumed with that objective rebuilt by its owner."""
    if not ckpt.list_checkpoints(out):
        ensure_free(out)  # a run still training there, before its first checkpoint: say so, not "train it first"
        raise UnmixError(f"resume: no checkpoint in {out} to resume from (train it without resume first)")
    c = ckpt.open_checkpoint(out)
    try:
        stored = TrainConfig.from_dict(c.config["train"])
    except (KeyError, TypeError) as e:
        raise UnmixError(f"{c.path}/config.json has no usable 'train' section ({e}); it can be sampled, not resumed") from None
    changes.pop("out", None)
    if "steps" in changes or "minutes" in changes:  # a new stop condition replaces the stored one
        stored.steps = stored.minutes = None
    for key, value in TrainConfig.from_dict(changes).__dict__.items():
        if key not in changes:
            continue
        if key in RUNTIME_KEYS or key in RESCUE_KEYS:
            setattr(stored, key, value)
        elif key == "net":
            _check_same_network(value, c.config.get("net") or {})
        elif value != getattr(stored, key):
            raise UnmixError(f"{key}={value!r} differs from the resumed run's {getattr(stored, key)!r}; on resume only "
                             f"{', '.join(sorted(RUNTIME_KEYS | RESCUE_KEYS))} may change (start a new run from its "
                             "weights with init= to change the rest)")
    stored.out = str(out)
    check_config(stored)
    return Run(stored, dataset, resume_from=c, objective=objective)


def _check_same_network(asked: dict, trained: dict) -> None:
    """Network settings given on resume must be the checkpoint's own (a resumed run keeps its network): name the
    first one that differs, compared with what the checkpoint was built with (lists and tuples alike)."""
    for name, value in asked.items():
        have = trained.get(name)
        same = list(value) == list(have) if isinstance(value, (list, tuple)) and isinstance(have, (list, tuple)) \
            else value == have
        if not same:
            raise UnmixError(f"the network setting {name}={value!r} differs from the resumed run's {have!r}; a run keeps "
                             "the network it was trained with (init= starts a new run from its weights with other "
                             "training settings; another network needs a new run)")
