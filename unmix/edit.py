"""Image-to-image with SDEdit (Meng et al. 2022): noise an input up to a level set by `strength`,
then let any sampler denoise it. Low strength keeps the layout and changes details; high strength
keeps little but the rough shape.

strength in [0, 1] maps to sigma on the same rho = 7 scale the Karras grids use, between the ends
of the grid plain generation would walk, so equal strength steps are equal steps along that grid.
Strength 0 returns the input unchanged; strength 1 starts from the noise alone, so it is plain
generation: the same samples as `sample()` with the same seed.

Given a whole grid (`sigmas=`, e.g. a named sampler's on a Stable Diffusion model's own timesteps), strength
instead walks its last int(strength x steps) steps, as diffusers' StableDiffusionImg2ImgPipeline and A1111's
img2img do (tests/test_sd_edit_inpaint.py).
"""
from __future__ import annotations

import math

import torch

from unmix import rng
from unmix.control import denoiser_and_range, generator_for, image_batch
from unmix.errors import UnmixError
from unmix.samplers import DEFAULT_SAMPLER, default_sigmas, sample

RHO = 7.0


def strength_to_sigma(strength: float, sigma_min: float = 0.002, sigma_max: float = 80.0) -> float:
    """The noise level an edit of this strength starts from (0 at strength 0)."""
    check_strength(strength)
    if strength in (0, 1):
        return float(strength) * sigma_max
    lo, hi = sigma_min ** (1 / RHO), sigma_max ** (1 / RHO)
    return (lo + strength * (hi - lo)) ** RHO


def check_strength(strength: float) -> None:
    if not (isinstance(strength, (int, float)) and math.isfinite(strength) and 0 <= strength <= 1):
        raise UnmixError(f"strength must be in [0, 1] (0 keeps the image, 1 ignores it), got {strength}")


@torch.no_grad()
def edit(
    model,
    image: torch.Tensor,
    strength: float,
    n: int | None = None,
    *,
    sampler: str = DEFAULT_SAMPLER,
    nfe: int = 20,
    generator: rng.Generators = None,
    seed: int | None = None,
    cond=None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    sigmas: torch.Tensor | None = None,
    return_nfe: bool = False,
    **options,
):
    """n edits of `image` [C, H, W] (or one per row of [n, C, H, W]) at `strength`, with at most nfe calls
    (with `sigmas`, a whole grid ending at 0: its last int(strength x steps) steps).

    `model` is a loaded Model or any denoiser (see control.denoiser_and_range for the sigma range used).
    """
    check_strength(strength)
    denoiser, sigma_min, sigma_max = denoiser_and_range(model, sigma_min, sigma_max)
    if sigmas is None:
        full = default_sigmas(sampler, nfe, sigma_min, sigma_max)  # the plain-generation grid: strength 1
        lo, hi = float(full[-2]), float(full[0])
        sigma, tail = strength_to_sigma(strength, lo, hi), None
    else:
        full = torch.as_tensor(sigmas)
        steps = len(full) - 1
        tail = full[steps - min(int(steps * strength), steps):]
        sigma, lo = float(tail[0]), float(full[-2])
    x = image_batch(image, n)
    if sigma == 0:
        out = x.clone()
        return (out, 0) if return_nfe else out
    generator = generator_for(seed, generator)
    start = rng.randn(x.shape, generator, x.dtype, x.device) * sigma
    if strength < 1:
        start = start + x
    ends = {"sigmas": tail} if tail is not None else {"sigma_min": min(lo, sigma), "sigma_max": sigma}
    return sample(denoiser, x.shape, sampler, nfe, generator=generator, cond=cond, x_init=start, **ends,
                  dtype=x.dtype, device=x.device, return_nfe=return_nfe, **options)
