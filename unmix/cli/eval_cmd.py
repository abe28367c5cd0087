"""`unmix eval` (sample quality) and `unmix nll` (likelihood): one line per number, optionally JSON; eval of a
checkpoint of images adds the copy check's two lines (`copies:` and `reference:`), and five-style emoji data the
held-out real pictures' figures (`reference (held-out real):`)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import typer

from unmix import api
from unmix.cli.app import app
from unmix.cli.options import (
    Sampler,
    choices,
    device_option,
    seed_option,
    threads_option,
    value,
)
from unmix.cli.outputs import check_file_path
from unmix.cli.parsing import read_prompts
from unmix.cli.progress import LazyBar
from unmix.distributed import pick_device
from unmix.errors import UnmixError
from unmix.likelihood import METHODS, TRACES, VARIANCES
from unmix.metrics.copies import copy_lines
from unmix.metrics.quality import evaluate, format_metrics, load_samples
from unmix.metrics.styles import reference_lines
from unmix.samplers import DEFAULT_SAMPLER

Method = choices("NllMethod", METHODS)
Trace = choices("Trace", TRACES)
Variance = choices("Variance", VARIANCES)


def _report(result: dict, json_path: Path | None) -> None:
    for line in format_metrics({k: v for k, v in result.items() if k not in ("copies", "heldout_real")}):
        print(line)
    for line in reference_lines(result):
        print(line)
    for line in copy_lines(result["copies"]) if "copies" in result else []:
        print(line)
    if json_path:
        json_path.write_text(json.dumps(result, indent=2) + "\n")


@app.command("eval")
def eval_command(
    checkpoint: str = typer.Argument(None, help="A checkpoint folder (or training output folder) to sample and measure."),
    samples: str = typer.Option(None, help="Measure these samples instead: a .npy, NCHW or NHW, values in [-1, 1]."),
    data: str = typer.Option(None, help="Dataset to measure against (digits, emoji, "
                                        "emoji:styles=all:split=train, swissroll, ring, moons, folder:PATH); "
                                        "default: the checkpoint's, or digits for --samples."),
    n: int = typer.Option(None, min=1, max=1_000_000, help="Samples to draw from the checkpoint (default 1000), or "
                                                          "per prompt with --prompts (default 10)."),
    prompts_file: Path = typer.Option(None, "--prompts", help="Text models of emoji: a file of prompts, one per "
                                                              "line; adds prompt adherence (identity top-1/top-5, "
                                                              "group accuracy, keyword hits, retrieval)."),
    guidance: float = typer.Option(None, min=0.0, max=100.0, help="Classifier-free guidance scale for the samples "
                                                                  "(default: the model's)."),
    sampler: Sampler = typer.Option(None, help=f"Sampler (default: the model's own, else {DEFAULT_SAMPLER})."),
    nfe: int = typer.Option(None, min=1, max=10000, help="Network evaluations per sample (default: the model's "
                                                        "own, else 32)."),
    seed: int = seed_option("Sample i uses seed + i; also seeds the toys' reference draw."),
    device: str = device_option(),
    json_path: str = typer.Option(None, "--json", help="Also write the numbers to this .json file."),
    threads: int = threads_option(),
):
    """Sample quality: FD, KID, precision and recall in a feature space of the dataset (exact sliced W2 and
    log-density gap for the 2-D toys), for five-style emoji FD to the held-out pictures too, beside what held-out
    real pictures score; for a checkpoint of images, the share of samples that copy a training picture, beside real
    pictures it never saw."""
    out = check_file_path(json_path, ".json")
    if (checkpoint is None) == (samples is None):
        raise UnmixError("give either a CHECKPOINT_DIR or --samples FILE.npy (with --data), not both or neither")
    if samples is not None:
        if prompts_file is not None or guidance is not None:
            raise UnmixError("--prompts and --guidance need a CHECKPOINT_DIR to sample, not --samples")
        result = {**evaluate(load_samples(samples), data or "digits", seed), "data": data or "digits"}
    else:
        prompts = read_prompts(prompts_file) if prompts_file is not None else None
        n = n or (10 if prompts else 1000)
        total = n * len(prompts) if prompts else n
        model = api.load(checkpoint, device=pick_device(device))
        nfe = nfe or model.sampling.get("nfe", 32)
        with LazyBar("eval: sample", math.ceil(total / 256) * nfe) as bar:
            result = api.evaluate(model, n=n, sampler=value(sampler), nfe=nfe, seed=seed, data=data,
                                  callback=bar, prompts=prompts, guidance=guidance)
    _report(result, out)


@app.command("nll")
def nll_command(
    checkpoint: str = typer.Argument(..., help="A checkpoint folder (or training output folder)."),
    data: str = typer.Option(None, help="Dataset to measure on; default: the checkpoint's (needed for a diffusers "
                                        "folder)."),
    method: Method = typer.Option("auto", help="vlb (discrete-time models), ode (any model), or auto."),
    n: int = typer.Option(256, min=1, max=1_000_000, help="Data items to measure."),
    steps: int = typer.Option(64, min=1, max=10000, help="ODE: RK4 steps in log sigma (4 evaluations each)."),
    trace: Trace = typer.Option("auto", help="ODE: exact, hutchinson, or auto (exact up to 16 dimensions)."),
    variance: Variance = typer.Option("small", help="VLB: reverse-step variance, small (posterior) or large."),
    sigma_min: float = typer.Option(None, min=1e-8, max=1e4, help="ODE: start the flow at this noise level."),
    seed: int = seed_option("Seeds the data subset, noise, dequantisation and probes."),
    batch_size: int = typer.Option(256, min=1, max=65536, help="Items per network batch."),
    device: str = device_option(),
    json_path: str = typer.Option(None, "--json", help="Also write the numbers to this .json file."),
    threads: int = threads_option(),
):
    """Negative log-likelihood in bits/dim: DDPM's variational bound or the probability-flow ODE."""
    out = check_file_path(json_path, ".json")
    with LazyBar("nll", n, unit="item") as bar:
        def progress(done, total):
            bar.advance(done - (bar.bar.n if bar.bar else 0))

        result = api.nll(checkpoint, value(method), n, steps=steps, trace=value(trace), variance=value(variance),
                         sigma_min=sigma_min, seed=seed, batch_size=batch_size, device=pick_device(device),
                         progress=progress, data=data)
    _report(result, out)
