"""What the image controls (inpaint, edit) share: taking a Model or a bare denoiser, one image or a batch."""
from __future__ import annotations

import torch

from unmix.errors import UnmixError


def denoiser_and_range(model, sigma_min: float | None = None, sigma_max: float | None = None):
    """(denoiser, sigma_min, sigma_max) from a loaded Model (its recipe's range, as Model.sample uses)
    or a bare denoiser (None: the samplers' default grid for the budget).

    Lets inpaint() and edit() take either in one line; explicit sigma_min / sigma_max win.
    """
    lo = hi = None
    if hasattr(model, "recipe") and hasattr(model, "denoiser"):
        lo, hi = model.recipe.sigma_range()
        model = model.denoiser
    return model, lo if sigma_min is None else sigma_min, hi if sigma_max is None else sigma_max


def generator_for(seed: int | None, generator):
    """`seed` as shorthand for torch.Generator().manual_seed(seed), as in samplers.sample()."""
    if seed is None:
        return generator
    if generator is not None:
        raise UnmixError("pass either seed or generator, not both")
    return torch.Generator().manual_seed(seed)


def image_batch(image, n: int | None) -> torch.Tensor:
    """[n, C, H, W] from one image [C, H, W] repeated n times (default 1) or a batch [N, C, H, W] (n = N)."""
    image = torch.as_tensor(image)
    if image.ndim == 3:
        return image.expand(1 if n is None else n, *image.shape)
    if image.ndim != 4 or (n is not None and n != image.shape[0]):
        raise UnmixError(f"expected one image [C, H, W] or a batch [N, C, H, W] with N = n, got {list(image.shape)}"
                         + ("" if n is None else f" for n={n}"))
    return image
