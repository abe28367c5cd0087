"""`unmix distill RUN --nfe K`: progressive distillation of a trained model into a K-step sampler (unmix.apps.distill)."""
from __future__ import annotations

import sys

import typer

from unmix.apps.distill import DistillSettings, distill
from unmix.cli.app import app
from unmix.cli.options import device_option, threads_option


@app.command("distill")
def distill_command(
    run: str = typer.Argument(..., help="The trained model: a checkpoint folder or a training output folder."),
    nfe: int = typer.Option(4, min=1, max=1024, help="Steps (network evaluations) of the distilled sampler."),
    out: str = typer.Option(None, help="Output run folder (default RUN-nfeK); run the same command again to continue."),
    from_nfe: int = typer.Option(None, "--from-nfe", min=2, max=4096,
                                 help="The teacher's steps in the first round (default 16, or a distilled RUN's own); "
                                      "each round halves them (must be --nfe times a power of two)."),
    minutes: float = typer.Option(None, min=0.001, max=1e6, help="Wall-clock budget of all rounds together."),
    steps: int = typer.Option(None, min=1, max=10**9, help="Optimiser steps per round (default 300 without --minutes)."),
    batch_size: int = typer.Option(128, "--batch-size", min=1, max=65536, help="Images per optimiser step."),
    lr: float = typer.Option(5e-4, min=1e-12, max=10.0, help="Learning rate (AdamW) of every round."),
    first_solver: str = typer.Option("heun", "--first-solver", help="The trained model's steps in round 1: heun or "
                                                                    "euler (= DDIM); later rounds are Euler."),
    seed: int = typer.Option(0, min=0, help="Seed of the data order, noise levels and noise."),
    device: str = device_option(),
    threads: int = threads_option(),
):
    """Distil a trained model into a few-step sampler (Salimans & Ho 2022); the result samples at --nfe by default."""
    folder = out or f"{run.rstrip('/')}-nfe{nfe}"
    settings = DistillSettings(from_nfe=from_nfe, minutes=minutes, steps=steps, batch_size=batch_size, lr=lr,
                               first_solver=first_solver, seed=seed, device=device, threads=threads)
    result = distill(run, nfe, folder, settings)
    if result.stopped_by in ("steps", "minutes"):
        print(f"distilled {run} into {nfe} Euler steps: {folder} (unmix sample {folder})", file=sys.stderr)
    else:
        print(f"stopped by {result.stopped_by} at step {result.step}; run the same command again to continue",
              file=sys.stderr)
