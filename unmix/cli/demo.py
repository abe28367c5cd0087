"""`unmix demo`: sample the bundled digits mixture with its exact denoiser, no training needed.

Shows what a perfectly trained model and a sampler do, in seconds: a PNG grid and a GIF of the
reverse process (x_sigma beside the denoiser's x0_hat at every step).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import typer

from unmix import samplers
from unmix.analytic import digits_mixture
from unmix.cli.app import app
from unmix.cli.options import Sampler, nfe_option, seed_option, threads_option, value
from unmix.data.images import render_batch, save_png
from unmix.show import ReverseRecorder


@app.command()
def demo(
    n: int = typer.Option(64, min=1, max=1024, help="Number of samples."),
    sampler: Sampler = typer.Option(samplers.DEFAULT_SAMPLER, help="Sampler."),
    nfe: int = nfe_option(10, "Denoiser evaluations per sample."),
    seed: int = seed_option("Random seed."),
    out: str = typer.Option("demo", help="Folder for grid.png and reverse.gif."),
    threads: int = threads_option(),
):
    """Sample a 16-component Gaussian mixture fitted to sklearn digits, with its exact denoiser."""
    mixture = digits_mixture()
    recorder = ReverseRecorder()
    x, used = samplers.sample(mixture, (n, *mixture.event_shape), value(sampler), nfe, seed=seed,
                              dtype=torch.float64, callback=recorder, return_nfe=True)
    x = x.float().clamp(-1, 1)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    save_png(render_batch(x), folder / "grid.png")
    recorder.save_gif(folder / "reverse.gif", x)
    print(f"{n} samples of the exact digits mixture ({value(sampler)}, {used} NFE): {folder}/grid.png, "
          f"{folder}/reverse.gif", file=sys.stderr)
