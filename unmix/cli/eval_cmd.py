"""`unmix eval` (sample quality) and `unmix nll` (likelihood): one line per number, optionally JSON."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from unmix.cli.app import app
from unmix.errors import UnmixError
from unmix.samplers import DEFAULT_SAMPLER


def _report(result: dict, json_path: str | None) -> None:
    from unmix.metrics.evaluate import format_metrics

    for line in format_metrics(result):
        print(line)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")


def _device(name: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


@app.command("eval")
def eval_command(
    checkpoint: str = typer.Argument(None, help="A checkpoint folder (or training output folder) to sample and measure"),
    samples: str = typer.Option(None, help="Measure these samples instead: a .npy, NCHW or NHW, values in [-1, 1]"),
    data: str = typer.Option(None, help="Dataset to measure against (digits, emoji, swissroll, ring, moons); "
                                        "default: the checkpoint's, or digits for --samples"),
    n: int = typer.Option(1000, help="Samples to draw from the checkpoint"),
    sampler: str = typer.Option(DEFAULT_SAMPLER, help="Sampler for the checkpoint"),
    nfe: int = typer.Option(32, help="Network evaluations per sample"),
    seed: int = typer.Option(0, help="Sample i uses seed + i; also seeds the toys' reference draw"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N (where the checkpoint's network runs)"),
    json_path: str = typer.Option(None, "--json", help="Also write the numbers to this JSON file"),
):
    """Sample quality: FD, KID, precision and recall in a dataset classifier's feature space (exact
    sliced W2 and log-density gap for the 2-D toys)."""
    from unmix.metrics.evaluate import evaluate, evaluate_checkpoint, load_samples

    if (checkpoint is None) == (samples is None):
        raise UnmixError("give either a CHECKPOINT_DIR or --samples FILE.npy (with --data), not both or neither")
    if samples is not None:
        result = evaluate(load_samples(samples), data or "digits", seed)
        result = {**result, "data": data or "digits"}
    else:
        if n < 1 or nfe < 1:
            raise UnmixError("--n and --nfe must be >= 1")
        result = evaluate_checkpoint(checkpoint, n=n, sampler=sampler, nfe=nfe, seed=seed, data=data,
                                     device=_device(device))
    _report(result, json_path)


@app.command("nll")
def nll_command(
    checkpoint: str = typer.Argument(..., help="A checkpoint folder (or training output folder)"),
    method: str = typer.Option("auto", help="vlb (discrete-time models), ode (any model), or auto: vlb when possible"),
    n: int = typer.Option(256, help="Data items to measure (images: a seeded subset; toys: a fresh draw)"),
    steps: int = typer.Option(64, help="ODE: RK4 steps in log sigma (4 network evaluations each)"),
    trace: str = typer.Option("auto", help="ODE: exact, hutchinson, or auto (exact up to 16 dimensions)"),
    variance: str = typer.Option("small", help="VLB: reverse-step variance, small (posterior) or large (beta_t)"),
    sigma_min: float = typer.Option(None, help="ODE: start the flow at this noise level (default: the model's)"),
    seed: int = typer.Option(0, help="Seeds the data subset, noise, dequantisation and probes"),
    batch_size: int = typer.Option(256, help="Items per network batch"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    json_path: str = typer.Option(None, "--json", help="Also write the numbers to this JSON file"),
):
    """Negative log-likelihood in bits/dim: DDPM's variational bound or the probability-flow ODE."""
    from unmix.likelihood import checkpoint_nll

    if steps < 1 or batch_size < 1:
        raise UnmixError("--steps and --batch-size must be >= 1")
    result = checkpoint_nll(checkpoint, method, n, steps=steps, trace=trace, variance=variance,
                            sigma_min=sigma_min, seed=seed, batch_size=batch_size, device=_device(device))
    _report(result, json_path)
