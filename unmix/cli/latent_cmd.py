"""`unmix train-autoencoder`: latent diffusion's first stage, trained by the same trainer as every model (EMA,
checkpoints, --resume, the run lock); then `unmix train --latent --autoencoder OUT` trains the diffusion on its
latents (`unmix train --latent` alone does both stages in one budget).

The run's final checkpoint gets the latent scale (unmix.training.autoencoder.finish_autoencoder), and its preview grid
(OUT/samples.png) shows rows of originals over their reconstructions.
"""
from __future__ import annotations

import sys

import typer

from unmix.cli.app import app
from unmix.cli.options import choices, threads_option, value
from unmix.cli.train_cmd import Precision, settings_from_flags
from unmix.data import NAMES
from unmix.distributed import finish_distributed
from unmix.training.config import default_out
from unmix.training.latent_run import finish, start_autoencoder

POSITIVE = dict(min=1)
Factor = choices("Factor", ("2", "4", "8"))


@app.command("train-autoencoder")
def train_autoencoder(
    data: str = typer.Option(None, help=f"Image dataset: {' | '.join(NAMES)} (default emoji)."),
    out: str = typer.Option(None, help="Output folder (default runs/<data>-autoencoder)."),
    steps: int = typer.Option(None, max=10**9, **POSITIVE, help="Total optimiser steps."),
    minutes: float = typer.Option(None, min=0.001, max=10**6, help="Stop after this many minutes."),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest checkpoint in --out."),
    size: int = typer.Option(None, min=4, max=1024, help="Image side for emoji and folder data (default 32)."),
    factor: Factor = typer.Option(None, help="Downsampling factor (default 4: 32x32 images -> 8x8 latents)."),
    latent_channels: int = typer.Option(None, max=64, **POSITIVE, help="Latent channels (default 4)."),
    channels: int = typer.Option(None, max=4096, **POSITIVE, help="Width at full resolution (default 32)."),
    blocks: int = typer.Option(None, max=64, **POSITIVE, help="Residual blocks per level (default 1)."),
    edge_weight: float = typer.Option(None, min=0.0, max=1e6, help="Weight of the edge (gradient difference) "
                                                                  "term (default 1)."),
    kl_weight: float = typer.Option(None, min=0.0, max=1e6, help="Weight of the per-pixel KL to N(0, I) "
                                                                "(default 1e-4)."),
    batch_size: int = typer.Option(None, "--batch-size", "--batch", max=1 << 20, **POSITIVE,
                                   help="Images per optimiser step (default 32)."),
    lr: float = typer.Option(None, min=1e-12, max=10.0, help="Peak learning rate (default 2e-3)."),
    ema_halflife: float = typer.Option(None, min=1e-6, max=1e9, help="EMA half-life in thousands of images "
                                                                     "(default 2)."),
    seed: int = typer.Option(None, min=0, max=2**63 - 1, help="Seed for data order and posterior noise."),
    checkpoint_every: int = typer.Option(None, max=10**9, **POSITIVE, help="Steps between checkpoints."),
    keep: int = typer.Option(None, max=10**6, **POSITIVE, help="Checkpoints to keep."),
    sample_every: int = typer.Option(None, max=10**9, **POSITIVE, help="Steps between reconstruction grids."),
    log_every: int = typer.Option(None, max=10**9, **POSITIVE, help="Steps between lines of OUT/stats.jsonl."),
    device: str = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
    threads: int = threads_option(),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the network."),
    precision: Precision = typer.Option(None, help="auto = bf16 autocast on CUDA only."),
):
    """Train the autoencoder of latent diffusion; then: unmix train --data DATA --latent --autoencoder OUT."""
    flags = {k: value(v) for k, v in locals().items() if k != "resume" and v is not None}
    net = {k: flags.pop(k) for k in ("latent_channels",) if k in flags}
    if "factor" in flags:
        net["channel_mult"] = {"2": [1, 2], "4": [1, 2, 2], "8": [1, 2, 2, 4]}[flags.pop("factor")]
    settings = settings_from_flags(flags)
    if net:
        settings["net"] = {**settings.get("net", {}), **net}
    out = settings.pop("out", None) or default_out(settings.get("data", "emoji")) + "-autoencoder"
    run = start_autoencoder(settings, out, resume)
    if run.dist.main:
        print(_announce(run), file=sys.stderr)
    result = run.train()
    m = finish(run, result)
    if m is not None:
        _report_end(run, result, m)
    finish_distributed()
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        raise typer.Exit(130 if result.stopped_by == "SIGINT" else 143)


def _announce(run) -> str:
    """One line: the autoencoder to train, on what, where, for how long."""
    d, cfg = run.describe(), run.config
    stop = " or ".join(([f"{cfg.steps} steps"] if cfg.steps else []) + ([f"{cfg.minutes:g} minutes"] if cfg.minutes else []))
    f = 2 ** (len(d['net']['channel_mult']) - 1)
    return (f"training a {d['parameters'] / 1e6:.2f}M-parameter autoencoder (factor {f}, "
            f"{d['net']['latent_channels']} latent channels) on {d['data']['name']} ({d['data']['size']} images) "
            f"on {d['device']} for {stop} -> {cfg.out}")


def _report_end(run, result, m: dict) -> None:
    """Where the stage stopped, how well it reconstructs, and the next command (or how to continue)."""
    out = run.config.out
    print(f"step {result.step}; checkpoint {result.checkpoint}; latent scale {m['latent_scale']:.4g}; "
          f"reconstruction PSNR {m['psnr']:.1f} dB over its {m['n']} training images "
          f"(originals over reconstructions: {out}/samples.png)", file=sys.stderr)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        print(f"stopped by {result.stopped_by}; continue with: unmix train-autoencoder --out {out} --resume",
              file=sys.stderr)
    else:
        print(f"next: unmix train --data {run.config.data} --latent --autoencoder {out}", file=sys.stderr)
