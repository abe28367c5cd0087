"""`unmix sample`, `unmix noise` and `unmix info`: generate from a model, show the forward process, describe a
checkpoint. Each is a few lines over one library call."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import typer

from unmix.api import forward_pictures
from unmix.cli.app import app
from unmix.cli.generation import from_png_option, lora_option, merge_loras, png_records, redraw
from unmix.cli.info import describe
from unmix.cli.options import (
    SamplerName,
    Weights,
    device_option,
    guidance_option,
    label_option,
    negative_prompt_option,
    prompt_option,
    seed_option,
    threads_option,
    value,
)
from unmix.cli.outputs import (
    check_file_path,
    fresh_folder,
    run_folder,
    save_npy,
    write_samples,
)
from unmix.cli.parsing import int_list, read_prompts, str_list
from unmix.cli.progress import LazyBar
from unmix.distributed import pick_device
from unmix.errors import UnmixError
from unmix.model import load
from unmix.sampler_names import named_sampler
from unmix.samplers import DEFAULT_SAMPLER, SAMPLERS
from unmix.show import ReverseRecorder
from unmix.store import checkpoint as ckpt


@app.command()
def sample(
    checkpoint: str = typer.Argument(None, help="A checkpoint folder, or a training output folder (its latest)."),
    n: int = typer.Option(64, min=1, max=1_000_000, help="Number of samples."),
    seed: int = seed_option(),
    seeds: str = typer.Option(None, help="Explicit comma-separated seeds, one per sample (overrides --n, --seed)."),
    sampler: SamplerName = typer.Option(None, help=f"Sampler (default: the model's own, else {DEFAULT_SAMPLER}); "
                                        "also A1111 / ComfyUI / diffusers names, e.g. 'DPM++ 2M Karras'.",
                                        show_default=False, case_sensitive=False),
    nfe: int = typer.Option(None, min=1, max=10000, help="Network evaluations per sample (default: the model's own, "
                                                         "else 32)."),
    out: str = typer.Option(None, help="New folder for grid.png and the single PNGs (default: a fresh numbered "
                                       "folder in RUN/generated/)."),
    label: str = label_option(),
    prompt: str = prompt_option(),
    prompts_file: Path = typer.Option(None, "--prompts", help="A text file of prompts, one per line: --n samples "
                                      "for each, one grid row per prompt, in the file's order; sample i of every "
                                      "prompt uses --seed + i."),
    negative_prompt: str = negative_prompt_option(),
    guidance: float = guidance_option(),
    save_npy_path: str = typer.Option(None, "--save-npy", help="Also save the raw samples (float32, [-1, 1], NCHW)."),
    gif: str = typer.Option(None, help="Also save a GIF of the reverse process (x_sigma | x0_hat) to this .gif."),
    nrow: int = typer.Option(None, min=1, max=1024, help="Images per grid row (default: about square)."),
    scale: int = typer.Option(None, min=1, max=64, help="Enlarge PNGs by this factor (default: to >= 64 pixels)."),
    singles: bool = typer.Option(True, "--singles/--no-singles", help="Write one PNG per sample."),
    weights: Weights = typer.Option("ema", help="ema, or model (the raw, non-averaged weights)."),
    device: str = device_option(),
    batch_size: int = typer.Option(256, min=1, max=65536, help="Samples per network batch."),
    threads: int = threads_option(),
    list_samplers: bool = typer.Option(False, "--list-samplers", help="List the samplers and exit."),
    lora: list[str] = lora_option(),
    from_png: Path = from_png_option(),
):
    """Generate samples from a trained model: a PNG grid, single PNGs (each carrying what made it), optionally raw
    .npy and a GIF.
    \f
    Long only for its option list: each flag is declared here so that --help lists it and typer checks its range."""
    if list_samplers:
        for name, spec in SAMPLERS.items():
            print(f"{name:16s} {spec.summary}")
        return
    if from_png is not None:
        return redraw(from_png, checkpoint, out, save_npy_path, device)
    if checkpoint is None:
        raise UnmixError("give a checkpoint folder or a training output folder, e.g. `unmix sample runs/digits`")
    seed_list, n, prompts, nrow = _seeds_and_prompts(seeds, seed, n, prompt, prompts_file, nrow)
    model = load(checkpoint, weights=value(weights), device=pick_device(device))
    loras = merge_loras(model, lora)
    labels = str_list(label)
    labels = model.labels_for(labels[0] if labels and len(labels) == 1 else labels, n)
    folder = fresh_folder(out, run_folder(model.checkpoint))
    npy, gif_path = check_file_path(save_npy_path, ".npy", folder), check_file_path(gif, ".gif", folder)
    recorder = ReverseRecorder() if gif_path else None
    sampler, nfe = model.sampling_defaults(value(sampler), nfe)
    x = _draw(model, n, sampler, nfe, batch_size, recorder, seed=seed, seeds=seed_list, labels=labels,
              guidance=guidance, prompts=prompts, negative_prompt=negative_prompt)
    seed_list = seed_list or list(range(seed, seed + n))
    texts = png_records(model, x, sampler, nfe, seed_list, batch_size, value(weights), loras, scale, prompts,
                        negative_prompt, guidance, labels)
    written = write_samples(folder, x, seed_list, nrow, scale, singles, texts=texts)
    if npy:
        written.append(save_npy(npy, x))
    if recorder is not None:
        recorder.save_gif(gif_path, x, nrow)
        written.append(str(gif_path))
    print(f"{n} samples from {model.checkpoint} ({sampler}, {nfe} NFE): " + ", ".join(written), file=sys.stderr)


def _seeds_and_prompts(seeds: str | None, seed: int, n: int, prompt: str | None, prompts_file: Path | None,
                       nrow: int | None) -> tuple[list[int] | None, int, str | list[str] | None, int | None]:
    """(seeds, n, prompts, nrow) of the whole draw: --seeds sets n; a --prompts file repeats --n samples of seeds
    --seed + i for each of its lines, one grid row per prompt."""
    seed_list = int_list(seeds, "--seeds")
    n = len(seed_list) if seed_list else n
    if prompts_file is None:
        return seed_list, n, prompt, nrow
    if prompt is not None:
        raise UnmixError("give either --prompt or --prompts FILE, not both")
    if seed_list:
        raise UnmixError("--seeds cannot be combined with --prompts (sample i of each prompt uses --seed + i)")
    lines = read_prompts(prompts_file)
    # rows differ only by prompt
    return [seed + i for _ in lines for i in range(n)], n * len(lines), [p for p in lines for _ in range(n)], nrow or n


def _draw(model, n: int, sampler: str, nfe: int, batch_size: int, recorder, **conditions):
    """model.sample with the named sampler and its step grid, under a progress bar (and the GIF's recorder)."""
    solver, grid = named_sampler(sampler, model.recipe, nfe)
    with LazyBar("sample", math.ceil(n / batch_size) * nfe) as bar:
        def callback(*args):
            bar.advance()
            if recorder is not None:
                recorder(*args)

        return model.sample(n, sampler=solver, nfe=nfe, batch_size=batch_size, callback=callback, **conditions,
                            **grid)


@app.command()
def noise(
    image: str = typer.Option(None, help="An image file to noise (otherwise an item of --data)."),
    data: str = typer.Option("digits", help="Dataset to take an item from when no --image is given."),
    index: int = typer.Option(0, min=0, help="Which dataset item."),
    size: int = typer.Option(64, min=4, max=1024, help="Resize and centre-crop --image to this side."),
    frames: int = typer.Option(10, min=2, max=200, help="Frames in the strip (noise levels from 0 to --sigma-max)."),
    sigma_max: float = typer.Option(20.0, min=1e-3, max=1e4, help="Largest noise level."),
    seed: int = seed_option("Seed of the noise path."),
    out: str = typer.Option("noise", help="Folder for strip.png and noise.gif."),
    gif: str = typer.Option(None, help="GIF path (default OUT/noise.gif)."),
):
    """The forward process on one image: noise spreading like ink in water, as a frame strip and a GIF."""
    strip, gif_path = forward_pictures(out, image, data, index, size, frames, sigma_max, seed, gif)
    print(f"forward process from sigma 0 to {sigma_max:g}: {strip}, {gif_path}", file=sys.stderr)


@app.command()
def info(
    checkpoint: str = typer.Argument(..., help="A checkpoint folder or a training output folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the checkpoint's config.json."),
):
    """What a checkpoint holds: network, recipe, data, training progress, and whether its weights are readable."""
    if as_json:
        print(json.dumps(ckpt.open_checkpoint(checkpoint).config, indent=2))
        return
    lines = describe(checkpoint)
    print("\n".join(lines))
    if lines[-1].startswith("health       DAMAGED"):  # the report above, then the one line of an error on stderr
        raise UnmixError(lines[-1].split("DAMAGED: ", 1)[1])
