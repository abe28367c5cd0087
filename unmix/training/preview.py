"""A run's preview grid (OUT/samples.png and OUT/samples/step-N.png): what the model draws at a checkpoint, kept
to a time budget at the end of a run so that short runs stay short."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from unmix.data.images import render_batch


def preview_grid(model, is_image: bool, sampler: str | None, nfe: int | None, device,
                 seconds: float | None = None) -> torch.Tensor:
    """64 images (one row of 8 per class, the first 10 classes), or 2,000 points; with `seconds`, only the rows of
    8 that fit in that budget (a first row is timed, the rest follow in one batch)."""
    n, labels = (64 if is_image else 2000), None
    if model.num_classes and is_image:
        n = 8 * min(model.num_classes, 10)
        labels = torch.arange(n) // 8
    elif model.num_classes:
        labels = torch.arange(n) % model.num_classes

    def draw(first: int, count: int) -> torch.Tensor:
        return model.sample(count, seed=first, sampler=sampler, nfe=nfe, device=device,
                            labels=None if labels is None else labels[first:first + count])

    if seconds is None or not is_image:
        return draw(0, n)
    t0 = time.monotonic()
    x = draw(0, 8)
    row = max(time.monotonic() - t0, 1e-6)
    more = min(n - 8, 8 * int((seconds - row) / row))
    return torch.cat([x, draw(8, more)]) if more > 0 else x


def save_preview(x: torch.Tensor, out: str | Path, step: int, is_image: bool) -> None:
    """The grid as OUT/samples/step-N.png and OUT/samples.png (the latest)."""
    folder = Path(out) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    img = render_batch(x, nrow=8 if is_image else None)
    img.save(folder / f"step-{step:08d}.png")
    img.save(Path(out) / "samples.png")
