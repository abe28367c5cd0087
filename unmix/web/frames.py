"""Pictures for the page as PNG data URLs: one image at its own size (to send back exactly), grids as the CLI
draws them, and the reverse-process frame the page streams: the noisy state as the network sees it beside the
model's current guess."""
from __future__ import annotations

import base64
import io

import torch
from PIL import Image

from unmix.data.images import make_grid, render_batch, to_pil
from unmix.forward import vp_view


def png_url(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=1)  # speed over size: frames are small and streamed at once
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def image_url(x: torch.Tensor) -> str:
    """One image [C, H, W] in [-1, 1] at its own size (lossless for 8-bit pixels, so it can be sent back)."""
    return png_url(to_pil(x))


def grid_url(x: torch.Tensor, nrow: int | None = None) -> str:
    """Images [N, C, H, W] as the CLI's grid (enlarged so small images stay visible)."""
    return png_url(render_batch(x.float().clamp(-1, 1).cpu(), nrow))


def frame_url(x: torch.Tensor, nrow: int | None = None) -> str:
    """Images [N, C, H, W] as a grid at their own size with 1-pixel gaps, for streaming: the page enlarges it
    (pixelated), so each frame costs a tiny PNG instead of one 8x larger."""
    return png_url(make_grid(x.float().clamp(-1, 1).cpu(), nrow, pad=1 if len(x) > 1 else 0))


def reverse_frame(step: int, sigma: float, x: torch.Tensor, x0_hat: torch.Tensor, nrow: int | None = None) -> dict:
    """A sampler callback's view (x_sigma, x0_hat) as the page shows it: x / sqrt(1 + sigma^2) (so high noise is
    not clipped to salt and pepper) beside x0_hat, with the step and noise level."""
    noisy = vp_view(x.detach().float().cpu(), float(sigma))
    return {"step": int(step), "sigma": float(sigma), "noisy": frame_url(noisy, nrow), "guess": frame_url(x0_hat, nrow)}
