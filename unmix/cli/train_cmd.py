"""`unmix train`: a thin shell over unmix.train.Trainer."""
from __future__ import annotations

import json
import signal
import sys

import typer

from unmix.cli.app import app
from unmix.errors import UnmixError


def _ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UnmixError(f"{flag} takes comma-separated integers, e.g. 1,2,2; got {text!r}") from None


@app.command()
def train(
    data: str = typer.Option(None, help="digits (default) | emoji | swissroll | ring | moons | folder:PATH"),
    out: str = typer.Option(None, help="Output folder (default runs/<data>)"),
    steps: int = typer.Option(None, help="Total optimiser steps (default: the dataset preset, 1000 for digits)"),
    minutes: float = typer.Option(None, help="Stop after this many minutes (with --steps: whichever comes first)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest checkpoint in --out"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and exit"),
    size: int = typer.Option(None, help="Image side for emoji and folder data (default 32)"),
    recipe: str = typer.Option(None, help="edm (default) | ddpm | v"),
    min_snr: float = typer.Option(None, help="Min-SNR-gamma loss weighting (e.g. 5; 0 = off)"),
    sigma_data: float = typer.Option(None, help="Standard deviation of the data for the EDM preconditioning (default 0.5)"),
    p_mean: float = typer.Option(None, help="EDM: mean of ln(sigma) over training noise levels (default -1.2; higher stresses layout)"),
    p_std: float = typer.Option(None, help="EDM: spread of ln(sigma) over training noise levels (default 1.2)"),
    batch_size: int = typer.Option(None, "--batch-size", "--batch", help="Images per optimiser step, over all processes"),
    lr: float = typer.Option(None, help="Peak learning rate (AdamW)"),
    warmup_steps: int = typer.Option(None, help="Linear learning-rate warm-up steps"),
    grad_clip: float = typer.Option(None, help="Gradient norm clip (0 = off)"),
    ema_halflife: float = typer.Option(None, help="EMA half-life in thousands of images"),
    accum: int = typer.Option(None, help="Gradient accumulation rounds per step"),
    seed: int = typer.Option(None, help="Seed for data order, noise levels and noise"),
    cond: str = typer.Option(None, help="none | label (class-conditional, for classifier-free guidance)"),
    label_dropout: float = typer.Option(None, help="Share of labels replaced by 'no label' (default 0.1 with --cond label)"),
    channels: int = typer.Option(None, help="U-Net width at full resolution"),
    channel_mult: str = typer.Option(None, help="U-Net width multipliers per level, e.g. 1,2,2"),
    blocks: int = typer.Option(None, help="Residual blocks per U-Net level"),
    attn: str = typer.Option(None, help="U-Net levels with self-attention (0 = full size), e.g. 1,2"),
    dropout: float = typer.Option(None, help="Dropout in residual blocks"),
    patch: int = typer.Option(None, help="Fold PxP pixel patches into channels before the U-Net (level 0 = size / P)"),
    checkpoint_every: int = typer.Option(None, help="Steps between checkpoints"),
    keep: int = typer.Option(None, help="Checkpoints to keep"),
    sample_every: int = typer.Option(None, help="Steps between sample grids (written to OUT/samples/)"),
    log_every: int = typer.Option(None, help="Steps between lines of OUT/stats.jsonl"),
    sampler: str = typer.Option(None, help="Sampler for the preview grids"),
    nfe: int = typer.Option(None, help="Network evaluations per preview sample"),
    device: str = typer.Option(None, help="auto | cpu | cuda | cuda:N"),
    threads: int = typer.Option(None, help="CPU threads (default: OMP_NUM_THREADS if set, else physical cores / processes)"),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the network"),
    precision: str = typer.Option(None, help="auto (bf16 autocast on CUDA only) | fp32 | bf16"),
):
    """Train a diffusion model; checkpoints, stats.jsonl and sample grids go to --out."""
    from unmix.train import TrainConfig, Trainer

    given = dict(data=data, out=out, steps=steps, minutes=minutes, size=size, recipe=recipe, min_snr_gamma=min_snr,
                 sigma_data=sigma_data, p_mean=p_mean, p_std=p_std,
                 batch_size=batch_size, lr=lr, warmup_steps=warmup_steps, grad_clip=grad_clip,
                 ema_halflife_kimg=ema_halflife, accum=accum, seed=seed, cond=cond, label_dropout=label_dropout,
                 checkpoint_every=checkpoint_every, keep=keep, sample_every=sample_every, log_every=log_every,
                 sampler=sampler, nfe=nfe, device=device, threads=threads, compile=compile, precision=precision)
    net = dict(channels=channels, channel_mult=_ints(channel_mult, "--channel-mult"), num_res_blocks=blocks,
               attn_levels=_ints(attn, "--attn"), dropout=dropout, patch_size=patch)
    net = {k: v for k, v in net.items() if v is not None}
    given = {k: v for k, v in given.items() if v is not None}
    if net:
        given["net"] = net
    trainer = Trainer(TrainConfig.from_dict(given), resume=resume, overrides=given)
    if dry_run:
        print(json.dumps(trainer.describe(), indent=2))
        return
    d = trainer.describe()
    if trainer.dist.main:
        what = f"{d['parameters'] / 1e6:.2f}M-parameter {d['net']['kind']}"
        stop = f"{trainer.config.steps} steps" if trainer.config.steps is not None else ""
        if trainer.config.minutes is not None:
            stop += (" or " if stop else "") + f"{trainer.config.minutes:g} minutes"
        where = d["device"] + (f" ({d['threads']} thread{'s' * (d['threads'] != 1)})" if d["threads"] else "")
        where += f" x {d['processes']} processes" if d["processes"] > 1 else ""
        print(f"training a {what} on {d['data']['name']} ({d['data']['size']} items) with the {d['recipe']['name']} "
              f"recipe on {where} for {stop} -> {trainer.config.out}", file=sys.stderr)
    result = trainer.run()
    if trainer.dist.main:
        loss = f", loss {result.last_stats['loss']:.4f}" if result.last_stats else ""
        print(f"step {result.step}{loss}; checkpoint {result.checkpoint}", file=sys.stderr)
        if result.stopped_by in ("SIGINT", "SIGTERM"):
            print(f"stopped by {result.stopped_by}; continue with: unmix train --out {trainer.config.out} --resume",
                  file=sys.stderr)
        else:
            print(f"samples: {trainer.config.out}/samples.png", file=sys.stderr)
    _finish_distributed()
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        raise SystemExit(128 + int(getattr(signal, result.stopped_by)))


def _finish_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
