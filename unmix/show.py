"""Pictures of the two processes: the forward one (noise spreading like ink in water) and the reverse one
(a sampler turning noise into data), as strips and GIFs that the CLI and the web page both draw.

Noisy states are shown as the network sees them, x / sqrt(1 + sigma^2) (the variance-preserving view), so high
noise stays in range instead of clipping to salt and pepper.
"""
from __future__ import annotations

import math

import torch
from PIL import Image

from unmix.data.images import render_batch, save_gif, scatter
from unmix.errors import UnmixError
from unmix.forward import trajectory, vp_view


def forward_sigmas(frames: int, sigma_max: float, sigma_min: float = 0.05) -> list[float]:
    """0, then `frames - 1` log-spaced levels up to sigma_max: the strip's noise levels."""
    if not isinstance(frames, int) or frames < 2:
        raise UnmixError(f"frames must be an integer >= 2, got {frames!r}")
    if not (math.isfinite(sigma_max) and sigma_max > 0):
        raise UnmixError(f"sigma_max must be a finite number > 0, got {sigma_max}")
    sigma_min = min(sigma_min, sigma_max)
    return [0.0] + torch.logspace(math.log10(sigma_min), math.log10(sigma_max), frames - 1).tolist()


def forward_frames(x0: torch.Tensor, sigmas: list[float], seed: int = 0) -> list[torch.Tensor]:
    """One Brownian forward path through `sigmas`, each frame in the network's (VP) view."""
    path = trajectory(x0, sigmas, torch.Generator().manual_seed(seed))
    return [vp_view(path[k], s) for k, s in enumerate(sigmas)]


def forward_strip(x0: torch.Tensor, frames: int = 10, sigma_max: float = 20.0, seed: int = 0) -> Image.Image:
    """The forward process on images [1, C, H, W] (one row) or points [N, 2] (one scatter plot per level)."""
    sigmas = forward_sigmas(frames, sigma_max)
    views = forward_frames(x0, sigmas, seed)
    if x0.ndim == 4:
        return render_batch(torch.cat(views), nrow=frames)
    return row([scatter(v, size=240) for v in views])


def forward_gif(x0: torch.Tensor, path, sigma_max: float = 20.0, seed: int = 0, frames: int = 48) -> None:
    """The forward process as a looping GIF (denser levels than the strip)."""
    sigmas = forward_sigmas(frames, sigma_max, sigma_min=0.02)
    save_gif([render_batch(v) for v in forward_frames(x0, sigmas, seed)], path)


def row(tiles: list[Image.Image], gap: int = 0) -> Image.Image:
    """Pictures side by side on white."""
    width = sum(t.width for t in tiles) + gap * (len(tiles) - 1)
    img = Image.new("RGB", (width, max(t.height for t in tiles)), "white")
    x = 0
    for t in tiles:
        img.paste(t.convert("RGB"), (x, 0))
        x += t.width + gap
    return img


class ReverseRecorder:
    """A sampler callback that keeps (x_sigma in the VP view, x0_hat) at every denoiser call, across batches,
    and draws them as frames: the noisy state beside the model's current guess."""

    def __init__(self, limit: int = 64):
        self.limit = limit
        self.steps: dict[int, list] = {}
        self.sigmas: dict[int, float] = {}

    def __call__(self, step, sigma, x, x0_hat):
        self.sigmas[step] = float(sigma)
        self.steps.setdefault(step, []).append((vp_view(x, float(sigma)).float().cpu(), x0_hat.float().cpu()))

    def frame(self, step: int, nrow: int | None = None) -> Image.Image:
        xs = torch.cat([a for a, _ in self.steps[step]])[: self.limit]
        x0 = torch.cat([b for _, b in self.steps[step]])[: self.limit].clamp(-1, 1)
        return row([render_batch(xs, nrow), render_batch(x0, nrow)], gap=8)

    def save_gif(self, path, final: torch.Tensor, nrow: int | None = None) -> None:
        frames = [self.frame(step, nrow) for step in sorted(self.steps)]
        last = render_batch(final[: self.limit], nrow)
        save_gif(frames + [row([last, last], gap=8)], path)
