"""`unmix inpaint` and `unmix edit`: steer a trained model with an image (and a mask, a label)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import typer
from PIL import Image

from unmix.cli.app import app
from unmix.data.images import auto_scale, make_grid, pil_to_array, read_image, resize_crop, to_pil
from unmix.errors import UnmixError
from unmix.guidance import DEFAULT_GUIDANCE, conditioning
from unmix.rng import generators_from_seeds
from unmix.samplers import DEFAULT_SAMPLER

LABEL = typer.Option(None, "--label", help="Class to steer towards (class-conditional models).")
GUIDANCE = typer.Option(None, "--guidance",
                        help=f"Classifier-free guidance scale (default {DEFAULT_GUIDANCE} with --label).")


def _fit(img: Image.Image, shape) -> Image.Image:
    """The picture at the model's size: short side scaled, centre-cropped (square models), or resized."""
    h, w = shape[-2:]
    if img.size == (w, h):
        return img
    return resize_crop(img, h) if h == w else img.resize((w, h), Image.LANCZOS)


def load_image(path: Path, shape) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file as [C, H, W] in [-1, 1] with the model's channels and size, and its original size."""
    if shape[0] not in (1, 3):
        raise UnmixError(f"the model has {shape[0]} channels; only 1 (grey) or 3 (RGB) images can be read")
    img = read_image(path)
    size = img.size
    img = img.convert("L" if shape[0] == 1 else "RGB")
    x = torch.from_numpy(pil_to_array(_fit(img, shape)).copy()).float() / 127.5 - 1
    return x, size


def load_mask(path: Path, image_size: tuple[int, int], shape) -> torch.Tensor:
    """A mask PNG as [1, H, W] bool (True = white = fill in), checked against the image's size."""
    img = read_image(path).convert("L")
    if img.size != image_size:
        raise UnmixError(f"mask {path} is {img.size[0]}x{img.size[1]} pixels but the image is "
                         f"{image_size[0]}x{image_size[1]}; they must be the same size")
    return torch.from_numpy(np.asarray(_fit(img, shape)) >= 128)[None]


def _write(out: Path, name: str, images: torch.Tensor, header: list[torch.Tensor], save_npy: Path | None) -> None:
    """A grid (the header images first, then the results) plus one PNG per result and optional raw .npy."""
    out.mkdir(parents=True, exist_ok=True)
    scale = auto_scale(images.shape[-2])
    grid = make_grid(torch.cat([torch.stack(header), images]), nrow=len(header) + min(len(images), 8), scale=scale)
    grid.save(out / f"{name}.png")
    for i, x in enumerate(images):
        to_pil(x, scale).save(out / f"{name}-{i:03d}.png")
    typer.echo(f"wrote {out / f'{name}.png'} and {len(images)} single images in {out}")
    if save_npy is not None:
        save_npy.parent.mkdir(parents=True, exist_ok=True)
        np.save(save_npy, images.numpy().astype(np.float32))
        typer.echo(f"wrote {save_npy} ({len(images)} x {list(images.shape[1:])}, values in [-1, 1])")


@app.command()
def inpaint(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder or training output folder."),
    image: Path = typer.Argument(..., help="Image to complete (read as the model's channels and size)."),
    mask: Path = typer.Option(..., "--mask", help="Mask PNG of the image's size: white = fill in, black = keep."),
    n: int = typer.Option(8, "--n", help="Number of completions."),
    method: str = typer.Option("repaint", "--method",
                               help="repaint (resampling), replace (2015), guided (reconstruction guidance) or "
                                    "guided_repaint (both)."),
    jump: int = typer.Option(5, "--jump", help="RePaint: steps per resampled segment."),
    repeats: int = typer.Option(4, "--repeats", help="RePaint: times each segment is sampled."),
    weight: float = typer.Option(1.0, "--weight",
                                 help="guided: strength of the pull towards the known pixels (>= 0)."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, "--sampler"),
    nfe: int = typer.Option(20, "--nfe", help="Sampler grid size (RePaint spends about repeats times this)."),
    seed: int = typer.Option(0, "--seed", help="Completion i uses seed + i."),
    label: int | None = LABEL,
    guidance: float | None = GUIDANCE,
    out: Path = typer.Option(Path("out"), "--out", help="Output folder."),
    save_npy: Path | None = typer.Option(None, "--save-npy", help="Also save the completions as [N, C, H, W] .npy."),
):
    """Fill in the white part of MASK so it fits the rest of IMAGE; known pixels stay exactly as given."""
    from unmix.api import load
    from unmix.inpaint import inpaint as run

    _positive(n=n, nfe=nfe)
    model = load(checkpoint)
    y, size = load_image(image, model.shape)
    m = load_mask(mask, size, model.shape)
    denoiser, cond = conditioning(model.denoiser, n, label, guidance)
    lo, hi = model.recipe.sigma_range()
    seeds = generators_from_seeds(range(seed, seed + n))
    x, used = run(denoiser, y, m, n, method=method, sampler=sampler, nfe=nfe, jump=jump, repeats=repeats,
                  weight=weight, generator=seeds, cond=cond, sigma_min=lo, sigma_max=hi, return_nfe=True)
    if method.startswith("guided"):
        typer.echo(f"{method} with {sampler}: {used} NFE "
                   f"({used // 2} denoiser calls, each a forward and a backward pass)")
    else:
        typer.echo(f"{method} with {sampler}: {used} denoiser calls")
    shown = torch.where(m, torch.zeros_like(y), y)  # the known part, unknown pixels grey
    _write(out, "inpaint", x.float().clamp(-1, 1), [y, shown], save_npy)


@app.command()
def edit(
    checkpoint: Path = typer.Argument(..., help="Checkpoint folder or training output folder."),
    image: Path = typer.Argument(..., help="Image to edit (read as the model's channels and size)."),
    strength: float = typer.Option(..., "--strength", help="0 keeps the image, 1 ignores it (plain generation)."),
    n: int = typer.Option(8, "--n", help="Number of edits."),
    sampler: str = typer.Option(DEFAULT_SAMPLER, "--sampler"),
    nfe: int = typer.Option(20, "--nfe"),
    seed: int = typer.Option(0, "--seed", help="Edit i uses seed + i."),
    label: int | None = LABEL,
    guidance: float | None = GUIDANCE,
    out: Path = typer.Option(Path("out"), "--out", help="Output folder."),
    save_npy: Path | None = typer.Option(None, "--save-npy", help="Also save the edits as [N, C, H, W] .npy."),
):
    """SDEdit: noise IMAGE to a level set by --strength, then denoise it into something the model knows."""
    from unmix.api import load
    from unmix.edit import check_strength, edit as run

    check_strength(strength)
    _positive(n=n, nfe=nfe)
    model = load(checkpoint)
    y, _ = load_image(image, model.shape)
    denoiser, cond = conditioning(model.denoiser, n, label, guidance)
    lo, hi = model.recipe.sigma_range()
    seeds = generators_from_seeds(range(seed, seed + n))
    x, used = run(denoiser, y, strength, n, sampler=sampler, nfe=nfe, generator=seeds, cond=cond,
                  sigma_min=lo, sigma_max=hi, return_nfe=True)
    typer.echo(f"strength {strength} with {sampler}: {used} denoiser calls")
    _write(out, "edit", x.float().clamp(-1, 1), [y], save_npy)


def _positive(**values: int) -> None:
    for name, v in values.items():
        if v < 1:
            raise UnmixError(f"--{name} must be >= 1, got {v}")
