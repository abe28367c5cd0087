"""Product photos on white: busy photo -> the product on clean white (*clean*), then framed square (*square*).

*clean* is image-conditioned diffusion (SR3 / Palette, see unmix.nets.unet): a denoiser trained on
unmix.data.products triples predicts the whole white-background image, given the busy photo as its condition.
Any photo size works: it is letterboxed into the model's square frame (scaled so its long side fits, the short
side padded by repeating its edge pixels, so the padding looks like more background, not a new object), cleaned,
and the letterbox undone back to the input's size.

*square* frames a white-background image for a marketplace listing: the product (the pixels that are not white)
is cut out with a margin and centred on a white square. A product cut by the frame needs outpainting, which is
not part of this module yet.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unmix.errors import UnmixError
from unmix.samplers import sample

WHITE_TOLERANCE = 0.08  # a pixel is background when every channel is within this of white (1.0), in [-1, 1] units


def check_photo(image) -> torch.Tensor:
    """The photo as float [3, H, W] in [-1, 1] (a [1, 3, H, W] batch of one is accepted)."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise UnmixError(f"image= must be a float tensor [3, H, W] in [-1, 1], got {type(image).__name__}"
                         + (f" of {image.dtype}" if isinstance(image, torch.Tensor) else ""))
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 2:
        raise UnmixError(f"image= must be an RGB image [3, H, W] with H, W >= 2, got shape {list(image.shape)}")
    if not torch.isfinite(image).all():
        raise UnmixError("image= holds NaN or infinite values; pass an RGB image in [-1, 1]")
    return image.clamp(-1, 1)


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """[3, H, W] -> ([3, size, size], (top, left, height, width) of the photo inside it): scaled (antialiased) so
    the long side is `size`, the short side padded on both sides by repeating the edge pixels."""
    _, h, w = image.shape
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    x = image if (nh, nw) == (h, w) else F.interpolate(image[None], size=(nh, nw), mode="bilinear",
                                                       antialias=True, align_corners=False)[0]
    top, left = (size - nh) // 2, (size - nw) // 2
    x = F.pad(x[None], (left, size - nw - left, top, size - nh - top), mode="replicate")[0]
    return x, (top, left, nh, nw)


def unletterbox(x: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """The inverse of letterbox: the photo's region of [3, S, S], resized back to (H, W)."""
    top, left, nh, nw = box
    x = x[:, top:top + nh, left:left + nw]
    if tuple(x.shape[1:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def clean(denoiser, image: torch.Tensor, size: int, *, sampler: str = "heun", nfe: int = 33, seed: int = 0,
          guidance=None) -> torch.Tensor:
    """Busy photo [3, H, W] -> the product on white [3, H, W], both in [-1, 1], by an image-conditioned denoiser
    trained at `size` (D(x, sigma, cond) with cond the letterboxed photo [1, 3, size, size]). `guidance` is a
    wrapper factory (e.g. functools.partial(ClassifierFreeGuidance, scale=2.0)) or None for plain conditional
    sampling."""
    image = check_photo(image)
    x, box = letterbox(image, size)
    d = denoiser if guidance is None else guidance(denoiser)
    with torch.no_grad():
        out = sample(d, (1, 3, size, size), sampler, nfe, seed=seed, cond=x[None])[0].clamp(-1, 1)
    return unletterbox(out, box, tuple(image.shape[1:]))


def product_box(white: torch.Tensor, tolerance: float = WHITE_TOLERANCE) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the pixels of a white-background image [3, H, W] that are not white."""
    white = check_photo(white)
    fg = (white < 1 - tolerance).any(0)
    if not fg.any():
        raise UnmixError("no product found: the image is white everywhere (nothing differs from the background)")
    rows, cols = fg.any(1).nonzero()[:, 0], fg.any(0).nonzero()[:, 0]
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def square(white: torch.Tensor, margin: float = 0.1, tolerance: float = WHITE_TOLERANCE) -> torch.Tensor:
    """A white-background image [3, H, W] -> [3, S, S]: the product's bounding box, unscaled, centred on white with
    `margin` (a fraction of its long side) of white around it on the long side; S = long side * (1 + 2 margin)."""
    if not 0 <= margin <= 1:
        raise UnmixError(f"margin= must be between 0 and 1 (a fraction of the product's size), got {margin!r}")
    white = check_photo(white)
    top, left, h, w = product_box(white, tolerance)
    side = max(h, w) + 2 * round(max(h, w) * margin)
    out = torch.ones(3, side, side, dtype=white.dtype)
    t, lft = (side - h) // 2, (side - w) // 2
    out[:, t:t + h, lft:lft + w] = white[:, top:top + h, left:left + w]
    return out


__all__ = ["clean", "square", "letterbox", "unletterbox", "product_box", "check_photo"]
