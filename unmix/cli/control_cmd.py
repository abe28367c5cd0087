"""`unmix inpaint` and `unmix edit`: steer a trained model with an image (and a mask, a label)."""
from __future__ import annotations

from pathlib import Path

import torch
import typer

from unmix import api
from unmix.cli.app import app
from unmix.cli.options import (
    Sampler,
    choices,
    guidance_option,
    label_option,
    negative_prompt_option,
    nfe_option,
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
from unmix.cli.progress import LazyBar
from unmix.data.images import (
    auto_scale,
    load_image_for,
    load_mask_for,
    make_grid,
    save_png,
)
from unmix.inpaint import METHODS
from unmix.model import load
from unmix.samplers import DEFAULT_SAMPLER

Method = choices("Method", METHODS)


def _write(folder: Path, name: str, images: torch.Tensor, header: list[torch.Tensor], seeds, npy) -> None:
    """The header images then the results as NAME.png, one PNG per result, and optionally raw .npy."""
    written = write_samples(folder, images, seeds, stem=name)
    scale = auto_scale(images.shape[-2])
    save_png(make_grid(torch.cat([torch.stack(header), images]), nrow=len(header) + min(len(images), 8), scale=scale),
             folder / f"{name}.png")
    if npy:
        written.append(save_npy(npy, images))
    print(f"wrote {folder / f'{name}.png'}, " + ", ".join(written))


@app.command()
def inpaint(
    checkpoint: str = typer.Argument(..., help="Checkpoint folder or training output folder."),
    image: Path = typer.Argument(..., help="Image to complete (read as the model's channels and size)."),
    mask: Path = typer.Option(..., "--mask", help="Mask image of the image's size: white = fill in, black = keep."),
    n: int = typer.Option(8, "--n", min=1, max=4096, help="Number of completions."),
    method: Method = typer.Option("repaint", "--method", help="repaint (resampling), replace (2015), guided "
                                                               "(reconstruction guidance) or guided_repaint (both)."),
    jump: int = typer.Option(5, "--jump", min=1, max=1000, help="RePaint: steps per resampled segment."),
    repeats: int = typer.Option(4, "--repeats", min=1, max=100, help="RePaint: times each segment is sampled."),
    weight: float = typer.Option(1.0, "--weight", min=0.0, max=1000.0, help="guided: pull towards the known pixels."),
    sampler: Sampler = typer.Option(DEFAULT_SAMPLER, "--sampler"),
    nfe: int = nfe_option(20, "Sampler grid size (RePaint spends about repeats times this)."),
    seed: int = seed_option("Completion i uses seed + i."),
    label: str = label_option(),
    prompt: str = prompt_option(),
    negative_prompt: str = negative_prompt_option(),
    guidance: float = guidance_option(),
    out: str = typer.Option(None, "--out", help="New folder for the results (default: RUN/inpainted/NNN)."),
    save_npy_path: str = typer.Option(None, "--save-npy", help="Also save the completions as [N, C, H, W] .npy."),
    threads: int = threads_option(),
):
    """Fill in the white part of MASK so it fits the rest of IMAGE; known pixels stay exactly as given."""
    model = load(checkpoint)
    y, size = load_image_for(image, model.shape)
    m = load_mask_for(mask, size, model.shape)
    folder = fresh_folder(out, run_folder(model.checkpoint), "inpainted")
    npy = check_file_path(save_npy_path, ".npy", folder)
    with LazyBar(f"inpaint ({value(method)})") as tick:
        x, used = api.inpaint(model, y, m, n, seed=seed, labels=label, guidance=guidance, prompts=prompt,
                              negative_prompt=negative_prompt, method=value(method),
                              sampler=value(sampler), nfe=nfe, jump=jump, repeats=repeats, weight=weight,
                              return_nfe=True, callback=tick)
    calls = f"{used} NFE ({used // 2} denoiser calls, each a forward and a backward pass)" \
        if value(method).startswith("guided") else f"{used} denoiser calls"
    print(f"{value(method)} with {value(sampler)}: {calls}")
    _write(folder, "inpaint", x, [y, torch.where(m, torch.zeros_like(y), y)], list(range(seed, seed + n)), npy)


@app.command()
def edit(
    checkpoint: str = typer.Argument(..., help="Checkpoint folder or training output folder."),
    image: Path = typer.Argument(..., help="Image to edit (read as the model's channels and size)."),
    strength: float = typer.Option(..., "--strength", min=0.0, max=1.0, help="0 keeps the image, 1 ignores it."),
    n: int = typer.Option(8, "--n", min=1, max=4096, help="Number of edits."),
    sampler: Sampler = typer.Option(DEFAULT_SAMPLER, "--sampler"),
    nfe: int = nfe_option(20),
    seed: int = seed_option("Edit i uses seed + i."),
    label: str = label_option(),
    prompt: str = prompt_option(),
    negative_prompt: str = negative_prompt_option(),
    guidance: float = guidance_option(),
    out: str = typer.Option(None, "--out", help="New folder for the results (default: RUN/edited/NNN)."),
    save_npy_path: str = typer.Option(None, "--save-npy", help="Also save the edits as [N, C, H, W] .npy."),
    threads: int = threads_option(),
):
    """SDEdit: noise IMAGE to a level set by --strength, then denoise it into something the model knows."""
    model = load(checkpoint)
    y, _ = load_image_for(image, model.shape)
    folder = fresh_folder(out, run_folder(model.checkpoint), "edited")
    npy = check_file_path(save_npy_path, ".npy", folder)
    with LazyBar("edit") as tick:
        x, used = api.edit(model, y, strength, n, seed=seed, labels=label, guidance=guidance, prompts=prompt,
                              negative_prompt=negative_prompt, sampler=value(sampler),
                           nfe=nfe, return_nfe=True, callback=tick)
    print(f"strength {strength} with {value(sampler)}: {used} denoiser calls")
    _write(folder, "edit", x, [y], list(range(seed, seed + n)), npy)
