"""The training loop: AdamW with warm-up, gradient clipping and accumulation, EMA, checkpoints, resume, DDP.

One global batch per step is drawn from a single seeded generator (item indices, noise levels,
noise, label dropout) and then split across ranks and accumulation rounds, so the run does not
depend on how the work is divided, and resuming restores that generator exactly: interrupted and
resumed equals uninterrupted, bit for bit on CPU. Under `torchrun` each rank computes its share,
DDP averages gradients, and rank 0 alone writes logs, sample grids and checkpoints.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from unmix import checkpoint as ckpt
from unmix.data import Dataset, load_dataset
from unmix.errors import UnmixError
from unmix.losses import RECIPES, Recipe
from unmix.nets import build_net


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint. None means "the dataset's default"."""

    data: str = "digits"
    size: int | None = None
    out: str | None = None  # default runs/<data>
    recipe: str = "edm"
    min_snr_gamma: float = 0.0
    sigma_data: float = 0.5  # EDM: the data's standard deviation (0.5 suits images in [-1, 1]; 1 for standardised data)
    p_mean: float | None = None  # EDM: mean of ln(sigma) in training (None: EDM's -1.2)
    p_std: float | None = None  # EDM: std of ln(sigma) in training (None: EDM's 1.2)
    steps: int | None = None  # total optimiser steps (a resumed run continues up to it)
    minutes: float | None = None  # wall-clock budget for this invocation
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_halflife_kimg: float | None = None  # EMA half-life in thousands of images
    ema_rampup: float = 0.1  # half-life <= rampup * images seen (a short memory early on)
    accum: int = 1
    seed: int = 0
    cond: str = "none"  # "none" | "label"
    label_dropout: float | None = None  # default 0.1 with cond="label" (for classifier-free guidance)
    net: dict = field(default_factory=dict)  # overrides of the network config (channels, channel_mult, ...)
    checkpoint_every: int = 1000
    keep: int = 3
    sample_every: int = 1000
    log_every: int = 50
    sampler: str | None = None  # preview grids; default the library's default sampler
    nfe: int = 32
    device: str = "auto"
    threads: int | None = None
    compile: bool = False
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UnmixError(f"unknown training settings {unknown}")
        return cls(**d)


# Settings that may change when resuming; the rest must match the checkpoint for an exact continuation.
RUNTIME_KEYS = {"steps", "minutes", "out", "checkpoint_every", "keep", "sample_every", "log_every",
                "sampler", "nfe", "device", "threads", "compile"}

# Per-dataset defaults, sized for a 2-core CPU: digits in about 5 minutes; emoji and folders want longer (or a GPU).
PRESETS = {
    "digits": dict(batch_size=128, lr=2e-3, ema_halflife_kimg=20.0, steps=1000,
                   net=dict(kind="unet", channels=32, num_res_blocks=2)),
    # emoji: 2x2 patches into a 64-channel U-Net (16/8/4 pixels at size 32). Per 30 CPU minutes it halves the FD of the
    # 32-channel full-resolution U-Net (16.9 against 31.9) and is the first to draw faces and rounded squares.
    "emoji": dict(batch_size=32, lr=1e-3, ema_halflife_kimg=10.0, steps=20000,
                  net=dict(kind="unet", patch_size=2, channels=64, num_res_blocks=1)),
    "image": dict(batch_size=64, lr=1e-3, ema_halflife_kimg=50.0, steps=20000,
                  net=dict(kind="unet", channels=64, num_res_blocks=2)),
    "points": dict(batch_size=512, lr=1e-3, ema_halflife_kimg=50.0, steps=4000,
                   net=dict(kind="mlp", hidden=256, depth=4)),
}


def _preset(ds: Dataset) -> dict:
    return PRESETS.get(ds.name) or PRESETS["image" if ds.is_image else "points"]


def _image_net_defaults(shape: tuple[int, ...], patch: int = 1) -> dict:
    """Halve the size (after folding patch x patch pixels) per level down to 4 pixels (2 for images of 8 or
    less), at most 5 levels; self-attention at 8 pixels and below (cheap there, where layout is decided)."""
    if patch < 1:
        raise UnmixError(f"--patch must be >= 1, got {patch}")
    if any(side % patch for side in shape[1:]):
        raise UnmixError(f"images of {shape[1]}x{shape[2]} pixels do not split into {patch}x{patch} patches; "
                         f"pick a --size divisible by {patch} or another --patch")
    side = min(shape[1:]) // patch
    levels = 1
    while levels < 5 and side % 2**levels == 0 and side // 2**levels >= (4 if side > 8 else 2):
        levels += 1
    return dict(channel_mult=[1] + [2] * (levels - 1), attn_levels=[i for i in range(1, levels) if side // 2**i <= 8])


def check_config(cfg: TrainConfig) -> None:
    """Reject impossible settings with one clear message each, before anything is loaded or written."""
    if cfg.steps is not None and cfg.steps < 0:
        raise UnmixError(f"--steps must be >= 0, got {cfg.steps}")
    for name in ("minutes", "batch_size", "lr", "ema_halflife_kimg", "accum", "checkpoint_every", "sample_every",
                 "log_every", "nfe", "threads", "size", "sigma_data", "p_std"):
        value = getattr(cfg, name)
        if value is not None and value <= 0:
            raise UnmixError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if cfg.recipe not in RECIPES:
        raise UnmixError(f"unknown recipe {cfg.recipe!r}; valid: {', '.join(RECIPES)}")
    for name in ("p_mean", "p_std"):
        value = getattr(cfg, name)
        if value is not None and (not math.isfinite(value) or cfg.recipe != "edm"):
            raise UnmixError(f"--{name.replace('_', '-')} must be a finite number and needs the edm recipe, got {value} "
                             f"with recipe {cfg.recipe}")
    if cfg.cond not in ("none", "label"):
        raise UnmixError(f"--cond must be 'none' or 'label', got {cfg.cond!r}")
    if cfg.label_dropout is not None and not 0 <= cfg.label_dropout < 1:
        raise UnmixError(f"--label-dropout must be in [0, 1), got {cfg.label_dropout}")
    if cfg.precision not in ("auto", "fp32", "bf16"):
        raise UnmixError(f"--precision must be auto, fp32 or bf16, got {cfg.precision!r}")
    if cfg.warmup_steps < 0 or cfg.grad_clip < 0 or cfg.weight_decay < 0 or cfg.keep < 1:
        raise UnmixError("--warmup-steps, --grad-clip and --weight-decay must be >= 0 and --keep >= 1")


def default_out(data: str) -> str:
    name = Path(data[len("folder:"):]).expanduser().resolve().name if data.startswith("folder:") else data
    return str(Path("runs") / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "folder"))


def resolve(cfg: TrainConfig, ds: Dataset) -> tuple[TrainConfig, dict, Recipe]:
    """Fill dataset defaults: returns (complete config, network config dict, recipe)."""
    preset = _preset(ds)
    cfg = copy.deepcopy(cfg)
    for key in ("batch_size", "lr", "ema_halflife_kimg"):
        setattr(cfg, key, getattr(cfg, key) or preset[key])
    if cfg.steps is None and cfg.minutes is None:
        cfg.steps = preset["steps"]
    cfg.out = cfg.out or default_out(cfg.data)
    if cfg.cond == "label":
        if ds.labels is None:
            raise UnmixError(f"--cond label needs a labelled dataset; {ds.name} has no labels")
        cfg.label_dropout = 0.1 if cfg.label_dropout is None else cfg.label_dropout
    else:
        cfg.label_dropout = 0.0
    if cfg.sampler is None:
        from unmix.samplers import DEFAULT_SAMPLER

        cfg.sampler = DEFAULT_SAMPLER
    noise_levels = {k: getattr(cfg, k) for k in ("p_mean", "p_std") if getattr(cfg, k) is not None}
    recipe = Recipe.from_name(cfg.recipe, min_snr_gamma=cfg.min_snr_gamma, sigma_data=cfg.sigma_data, **noise_levels)
    num_classes = ds.num_classes if cfg.cond == "label" else 0
    if ds.is_image:
        patch = cfg.net.get("patch_size", preset["net"].get("patch_size", 1))
        net = {"kind": "unet", **_image_net_defaults(ds.shape, patch), **preset["net"], "in_channels": ds.shape[0]}
    else:
        net = {**preset["net"], "dim": ds.shape[0]}
    net.update(num_classes=num_classes, noise_scale=recipe.noise_scale)
    net.update(cfg.net)
    build_net(net)  # validates the settings
    return cfg, net, recipe


# -- process setup -------------------------------------------------------------------------------
def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads share a core)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise UnmixError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
        name = f"cuda:{d.local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise UnmixError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from None


# -- EMA ------------------------------------------------------------------------------------------
def ema_update(ema: nn.Module, net: nn.Module, batch: int, images_seen: int, halflife_kimg: float, rampup: float):
    """EMA with a half-life counted in images (Karras et al. 2022), shortened early in training."""
    halflife = halflife_kimg * 1000
    if rampup > 0:
        halflife = min(halflife, images_seen * rampup)
    beta = 0.5 ** (batch / halflife) if halflife > 0 else 0.0
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters()):
            e.lerp_(p.detach().to(e.dtype), 1 - beta)
        for e, b in zip(ema.buffers(), net.buffers()):
            e.copy_(b)


# -- the trainer ----------------------------------------------------------------------------------
class Stop:
    """Ctrl-C / SIGTERM set a flag; the loop finishes its step, saves and exits. A second Ctrl-C aborts."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum
        print(f"\n{signal.Signals(signum).name}: finishing this step, then saving a checkpoint "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class TrainResult:
    checkpoint: Path | None
    step: int
    stopped_by: str  # "steps" | "minutes" | "SIGINT" | "SIGTERM"
    last_stats: dict = field(default_factory=dict)


class Trainer:
    """Build with a TrainConfig (and optionally a ready Dataset); `run()` trains and returns a TrainResult,
    leaving the trained `net` and its `ema` on the trainer.

    `overrides` are the settings the user gave explicitly; with resume=True the rest comes from the
    run's latest checkpoint, and only RUNTIME_KEYS may differ from it.
    """

    def __init__(self, config: TrainConfig | None = None, dataset: Dataset | None = None, resume: bool = False,
                 overrides: dict | None = None):
        config = config or TrainConfig()
        check_config(config)
        self.resume_from, self.last_record = None, {}
        if resume:
            config = self._resume_config(config, overrides)
        self.dist = init_distributed(config.device)
        self.device = pick_device(config.device, self.dist)
        self.dataset = dataset if dataset is not None else load_dataset(config.data, config.size)
        self.config, self.net_config, self.recipe = resolve(config, self.dataset)
        cfg = self.config
        if cfg.batch_size % (self.dist.world * cfg.accum):
            raise UnmixError(f"--batch-size {cfg.batch_size} must be divisible by processes x --accum "
                             f"= {self.dist.world * cfg.accum}")
        if self.resume_from is not None:
            stored = self.resume_from.config
            if stored["data"].get("shape") != list(self.dataset.shape):
                raise UnmixError(f"the dataset now gives items of shape {list(self.dataset.shape)}, but the checkpoint "
                                 f"was trained on {stored['data'].get('shape')}")
            self.net_config, self.recipe = stored["net"], Recipe.from_dict(stored["recipe"])
        elif ckpt.list_checkpoints(cfg.out):
            raise UnmixError(f"{cfg.out} already holds checkpoints; pass --resume to continue that run, "
                             f"or choose another --out")

    def _resume_config(self, config: TrainConfig, overrides: dict | None) -> TrainConfig:
        out = config.out or default_out(config.data)
        if not ckpt.list_checkpoints(out):
            raise UnmixError(f"--resume: no checkpoint in {out} to resume from (train without --resume first)")
        self.resume_from = ckpt.open_checkpoint(out)
        stored = TrainConfig.from_dict(self.resume_from.config["train"])
        overrides = overrides or {}
        if "steps" in overrides or "minutes" in overrides:  # a new stop condition replaces the stored one
            stored.steps = stored.minutes = None
        for key, value in overrides.items():
            if key in RUNTIME_KEYS:
                setattr(stored, key, value)
            elif value != getattr(stored, key):
                raise UnmixError(f"--{key.replace('_', '-')} {value} differs from the resumed run's "
                                 f"{getattr(stored, key)}; only {', '.join(sorted(RUNTIME_KEYS))} may change on --resume")
        stored.out = out
        return stored

    def describe(self) -> dict:
        """The fully resolved run, as --dry-run prints it."""
        net = build_net(self.net_config)
        return {
            "train": asdict(self.config),
            "net": self.net_config,
            "parameters": sum(p.numel() for p in net.parameters()),
            "recipe": self.recipe.to_dict(),
            "data": self.dataset.describe(),
            "device": str(self.device),
            "threads": self._threads() if self.device.type == "cpu" else None,
            "processes": self.dist.world,
            "resume_from": str(self.resume_from.path) if self.resume_from else None,
        }

    def _threads(self) -> int:
        """--threads, else OMP_NUM_THREADS when the user set it, else the physical cores shared among local ranks."""
        omp = os.environ.get("OMP_NUM_THREADS", "")
        if self.config.threads or (omp.isdigit() and int(omp) > 0):
            return self.config.threads or int(omp)
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(self.dist.world)))
        return max(1, physical_cores() // local_world)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, progress: bool = True) -> TrainResult:
        cfg, d = self.config, self.dist
        if self.device.type == "cpu":
            torch.set_num_threads(self._threads())
        torch.manual_seed(cfg.seed + d.rank)  # dropout; each rank its own stream
        self.net = net = build_net(self.net_config).to(self.device)
        self.ema = ema = copy.deepcopy(net).eval().requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        step, images = 0, 0
        if self.resume_from is not None:
            step, images = self._restore(self.resume_from, net, ema, opt, gen)
            if d.main:
                _truncate_log(Path(cfg.out) / "stats.jsonl", step)
        model = net
        if d.world > 1:
            model = nn.parallel.DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            model = torch.compile(model)
        data = self.dataset.to(self.device)
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        denoiser = self.recipe.denoiser(model)
        stats = _Stats(self.device)
        last_good = self.resume_from.path if self.resume_from else None
        start_time, stopped_by = time.monotonic(), "steps"
        bar = _progress(progress and d.main, step, cfg.steps, cfg.minutes)
        with Stop() as stop:
            while True:
                reason = self._should_stop(step, start_time, stop)
                if reason:
                    stopped_by = reason
                    break
                for g in opt.param_groups:
                    g["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
                self._step(model, denoiser, data, opt, gen, stats, autocast)
                step += 1
                images += cfg.batch_size
                ema_update(ema, net, cfg.batch_size, images, cfg.ema_halflife_kimg, cfg.ema_rampup)
                bar.update(1)
                if step % cfg.log_every == 0:
                    bar.set_postfix(loss=f"{self._log(stats, step, images, start_time, opt, last_good):.4f}")
                if step % cfg.checkpoint_every == 0:
                    last_good = self._save(step, images, net, ema, opt, gen, stats, start_time, last_good)
                if step % cfg.sample_every == 0 and d.main:
                    self._preview(ema, step)
        bar.close()
        if stats.count:
            self._log(stats, step, images, start_time, opt, last_good)
        if last_good is None or not last_good.name.endswith(f"{step:08d}"):
            last_good = self._save(step, images, net, ema, opt, gen, stats, start_time, last_good)
        if d.main and step % cfg.sample_every != 0 and stopped_by in ("steps", "minutes"):
            self._preview(ema, step)
        if d.world > 1:
            dist.barrier()
        return TrainResult(last_good, step, stopped_by, self.last_record)

    def _should_stop(self, step: int, start_time: float, stop: Stop) -> str | None:
        cfg = self.config
        reasons = ["steps", "minutes", "SIGINT", "SIGTERM"]
        flags = torch.zeros(4)
        flags[0] = cfg.steps is not None and step >= cfg.steps
        flags[1] = cfg.minutes is not None and time.monotonic() - start_time >= cfg.minutes * 60
        flags[2] = stop.signal == signal.SIGINT
        flags[3] = stop.signal == signal.SIGTERM
        if self.dist.world > 1:  # every rank must stop at the same step
            flags = flags.to(self.device)
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
            flags = flags.cpu()
        hit = [r for r, f in zip(reasons, flags.tolist()) if f]
        return hit[-1] if hit else None

    def _step(self, model, denoiser, data: Dataset, opt, gen, stats: "_Stats", autocast) -> None:
        cfg, d = self.config, self.dist
        B = cfg.batch_size
        idx = torch.randint(0, len(data), (B,), generator=gen)
        sigma = self.recipe.sample_sigma(B, gen)
        noise = torch.randn((B, *data.shape), generator=gen)
        drop = torch.rand(B, generator=gen) < cfg.label_dropout
        share = B // d.world
        lo = d.rank * share
        micro = share // cfg.accum
        opt.zero_grad(set_to_none=True)
        for k in range(cfg.accum):
            sl = slice(lo + k * micro, lo + (k + 1) * micro)
            x0, labels = data.batch(idx[sl].to(self.device))
            cond = None
            if cfg.cond == "label":
                cond = torch.where(drop[sl].to(self.device), self.dataset.num_classes, labels)
            sync = k == cfg.accum - 1 or d.world == 1
            with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
                per_sample = self.recipe.loss(denoiser, x0, sigma[sl].to(self.device), noise[sl].to(self.device), cond)
            (per_sample.sum() / share).backward()
            stats.add(per_sample.detach(), self.recipe.quantile(sigma[sl]).to(self.device))
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        stats.add_grad(grad_norm)
        opt.step()

    def _log(self, stats: "_Stats", step: int, images: int, start_time: float, opt, last_good) -> float:
        """Reduce the stats over ranks, stop on a non-finite loss, write one JSON line (rank 0)."""
        record = stats.reduce(self.dist)
        if not all(math.isfinite(v) for v in (record["loss"], record["grad_norm"])):
            kept = f"the last good checkpoint ({last_good}) is untouched" if last_good else "no checkpoint was written"
            raise UnmixError(f"training diverged: non-finite loss or gradient by step {step}; {kept}; "
                             f"try a lower --lr (now {self.config.lr}) or a stronger --grad-clip")
        record = {"step": step, "kimg": round(images / 1000, 3), **record,
                  "lr": opt.param_groups[0]["lr"], "seconds": round(time.monotonic() - start_time, 2)}
        self.last_record = record
        if self.dist.main:
            path = Path(self.config.out) / "stats.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as f:
                f.write(json.dumps(record) + "\n")
        return record["loss"]

    def _save(self, step, images, net, ema, opt, gen, stats, start_time, last_good) -> Path:
        if stats.count:  # never save weights that came from a non-finite step
            self._log(stats, step, images, start_time, opt, last_good)
        path = Path(self.config.out) / f"{ckpt.PREFIX}{step:08d}"
        if self.dist.main:
            state = {
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "step": step,
                "images": images,
            }
            path = ckpt.save_checkpoint(self.config.out, step, self.checkpoint_config(images), net.state_dict(),
                                        ema.state_dict(), state, self.config.keep)
        if self.dist.world > 1:
            dist.barrier()
        return path

    def checkpoint_config(self, images: int) -> dict:
        return {"net": self.net_config, "recipe": self.recipe.to_dict(), "data": self.dataset.describe(),
                "train": asdict(self.config), "images_seen": images, "unmix_version": _version()}

    def _restore(self, c: ckpt.Checkpoint, net, ema, opt, gen) -> tuple[int, int]:
        net.load_state_dict(c.weights("model"))
        ema.load_state_dict(c.weights("ema"))
        state = c.training_state()
        opt.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["step"]), int(state["images"])

    def _preview(self, ema: nn.Module, step: int) -> None:
        from unmix.api import Model
        from unmix.data.images import render_batch

        model = Model(ema, self.recipe, self.dataset.describe())
        n = 64 if self.dataset.is_image else 2000
        labels = None
        if model.num_classes and self.dataset.is_image:  # one row of 8 per class (the first 10 classes)
            n = 8 * min(model.num_classes, 10)
            labels = torch.arange(n) // 8
        elif model.num_classes:
            labels = torch.arange(n) % model.num_classes
        x = model.sample(n, seed=0, sampler=self.config.sampler, nfe=self.config.nfe, labels=labels, device=self.device)
        folder = Path(self.config.out) / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        img = render_batch(x, nrow=8 if self.dataset.is_image else None)
        img.save(folder / f"step-{step:08d}.png")
        img.save(Path(self.config.out) / "samples.png")


class _Stats:
    """Loss sums per sigma quartile and gradient norms, kept on the device until a log step."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self):
        self.sums = torch.zeros(4, device=self.device, dtype=torch.float64)
        self.counts = torch.zeros(4, device=self.device, dtype=torch.float64)
        self.grad = torch.zeros(2, device=self.device, dtype=torch.float64)
        self.count = 0

    def add(self, per_sample: torch.Tensor, quantile: torch.Tensor):
        q = (quantile * 4).long().clamp(0, 3)
        self.sums.index_add_(0, q, per_sample.double())
        self.counts.index_add_(0, q, torch.ones_like(per_sample, dtype=torch.float64))
        self.count += 1

    def add_grad(self, norm: torch.Tensor):
        self.grad += torch.stack([norm.double(), torch.ones((), device=self.device, dtype=torch.float64)])

    def reduce(self, d: Dist) -> dict:
        packed = torch.cat([self.sums, self.counts, self.grad])
        if d.world > 1:
            dist.all_reduce(packed)
        s, c, g = packed[:4].tolist(), packed[4:8].tolist(), packed[8:].tolist()
        self.reset()
        return {
            "loss": sum(s) / max(sum(c), 1),
            **{f"loss_q{i}": (s[i] / c[i] if c[i] else None) for i in range(4)},
            "grad_norm": g[0] / max(g[1], 1),
        }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("unmix")
    except PackageNotFoundError:
        return "unknown"


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _progress(enabled: bool, step: int, steps: int | None, minutes: float | None):
    from tqdm import tqdm

    desc = "train" if minutes is None else f"train ({minutes:g} min)"
    interval = 0.5 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not a flood
    return tqdm(total=steps, initial=step, desc=desc, disable=not enabled, dynamic_ncols=True, unit="step",
                mininterval=interval)


def train(config: TrainConfig | None = None, dataset: Dataset | None = None, resume: bool = False,
          progress: bool = True, **settings) -> TrainResult:
    """Train from a TrainConfig or keyword settings, e.g. train(data="digits", steps=2000)."""
    config = config or TrainConfig(**settings)
    return Trainer(config, dataset, resume=resume, overrides=settings).run(progress=progress)
