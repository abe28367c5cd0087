"""One optimiser step and the state it changes: TrainState (weights, EMA, optimiser, data generator, counters;
saved into and restored from a checkpoint), the EMA update and `train_step`, the loop's body that
`unmix.training.trainer.Run` repeats (public: benchmarks and tests drive it themselves).

The step's invariant: one global batch is drawn from the state's single seeded generator (item indices first,
then the objective's noise levels, noise and label dropout), and only then split across ranks and accumulation
rounds, so a run does not depend on how the work is divided.
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unmix.data import Dataset
from unmix.distributed import Dist
from unmix.store import checkpoint as ckpt
from unmix.training.config import TrainConfig
from unmix.training.log import StepStats
from unmix.training.objectives import split


@dataclass
class TrainState:
    """Everything that changes during training: weights, their EMA, the optimiser, the data generator, counters."""

    net: nn.Module
    ema: nn.Module
    opt: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    images: int = 0

    @classmethod
    def fresh(cls, net: nn.Module, cfg: TrainConfig) -> "TrainState":
        ema = copy.deepcopy(net).eval().requires_grad_(False)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        return cls(net, ema, opt, torch.Generator().manual_seed(cfg.seed))

    def save(self, out: str | Path, config: dict, keep: int, extra: dict | None = None) -> Path:
        """A checkpoint of this state; `extra` adds weight files (a latent model's autoencoder: {stem: state_dict})."""
        state = {"optimizer": self.opt.state_dict(), "generator": self.generator.get_state(),
                 "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "step": self.step, "images": self.images}
        weights = {"model": self.net.state_dict(), "ema": self.ema.state_dict(), **(extra or {})}
        return ckpt.save_checkpoint(out, self.step, {**config, "images_seen": self.images}, weights, state, keep)

    def restore(self, c: ckpt.Checkpoint) -> None:
        self.net.load_state_dict(c.weights("model"))
        self.ema.load_state_dict(c.weights("ema"))
        state = c.training_state()
        self.opt.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.images = int(state["step"]), int(state["images"])


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


def train_step(state: TrainState, model: nn.Module, objective, data: Dataset, cfg: TrainConfig, d: Dist,
               stats: StepStats, autocast=contextlib.nullcontext()) -> None:
    """One optimiser step on one global batch: draw it all, run this rank's share in `accum` rounds, clip, step,
    update the EMA. `model` is `state.net` itself or its DDP / compiled wrapper."""
    B, device = cfg.batch_size, next(state.net.parameters()).device
    for g in state.opt.param_groups:
        g["lr"] = cfg.lr * min(1.0, (state.step + 1) / max(1, cfg.warmup_steps))
    idx = torch.randint(0, len(data), (B,), generator=state.generator)
    draws = {**objective.draw(B, state.generator, data.shape), "items": idx}
    share = B // d.world
    micro = share // cfg.accum
    state.opt.zero_grad(set_to_none=True)
    for k in range(cfg.accum):
        sl = slice(d.rank * share + k * micro, d.rank * share + (k + 1) * micro)
        x0, cond = data.batch(idx[sl].to(device))
        sync = k == cfg.accum - 1 or d.world == 1
        with (contextlib.nullcontext() if sync else model.no_sync()), autocast:
            per_sample = objective.loss(model, x0, cond, split(draws, sl, device))
        (per_sample.sum() / share).backward()
        stats.add(per_sample.detach(), objective.bucket(split(draws, sl, "cpu")).to(device))
    stats.add_grad(nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf))
    state.opt.step()
    state.step += 1
    state.images += B
    ema_update(state.ema, state.net, B, state.images, cfg.ema_halflife_kimg, cfg.ema_rampup)
