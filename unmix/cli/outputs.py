"""Where generated images go and how they are written: a fresh folder per call, beside the run by default,
never mixed with older files; paths checked before any sampling work starts."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from unmix.adapters.png_params import png_info
from unmix.data.images import auto_scale, make_grid, render_batch, save_png, to_pil
from unmix.errors import UnmixError
from unmix.store.files import atomic_path

GRID_LIMIT = 1024  # images drawn in one grid; the rest are still written one by one and to .npy


def run_folder(checkpoint: Path) -> Path:
    """The run a checkpoint belongs to (its parent for checkpoint-* folders), else the checkpoint folder itself."""
    return checkpoint.parent if checkpoint.name.startswith("checkpoint-") else checkpoint


def fresh_folder(out: str | os.PathLike | None, beside: Path, kind: str = "generated") -> Path:
    """`out` if it is new or empty; else an error. Without `out`: the next free BESIDE/<kind>/NNN."""
    if out is not None:
        out = Path(out)
        if out.exists() and not out.is_dir():
            raise UnmixError(f"out={str(out)!r} is a file; give a folder")
        if out.is_dir() and any(out.iterdir()):
            raise UnmixError(f"out={str(out)!r} already holds files; give a new or empty folder (without out=, each "
                             f"call writes a fresh numbered folder beside the run)")
        _check_writable(out)
        return out
    root = beside / kind
    taken = [int(p.name) for p in root.iterdir() if p.name.isdigit()] if root.is_dir() else []
    folder = root / f"{max(taken, default=0) + 1:03d}"
    _check_writable(folder)
    return folder


def check_file_path(path: str | os.PathLike | None, suffix: str, created: Path | None = None) -> Path | None:
    """An output file the user named: the right suffix, its folder existing (or being `created`, the call's own
    output folder) and writable; checked up front, before any work."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise UnmixError(f"{path} must end in {suffix}")
    if path.is_dir():
        raise UnmixError(f"{path} is a folder; give a file name ending in {suffix}")
    if created is not None and path.parent.resolve() == Path(created).resolve():
        _check_writable(path.parent)
        return path
    if not path.parent.is_dir():
        raise UnmixError(f"the folder of {path} does not exist; create it first or choose another path")
    if not os.access(path.parent, os.W_OK):
        raise UnmixError(f"cannot write to the folder of {path} (permission denied)")
    return path


def _check_writable(folder: Path) -> None:
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise UnmixError(f"cannot create {folder}: {existing} is not a writable folder")


def write_samples(folder: Path, x: torch.Tensor, seeds: list[int], nrow: int | None = None, scale: int | None = None,
                  singles: bool = True, stem: str | None = None, texts: list[dict] | None = None) -> list[str]:
    """grid.png (or scatter.png for points) and, for images, one PNG per sample (named by its seed, or STEM-NNN),
    enlarged by `scale` (default: to at least 64 pixels) so that small images are visible; `texts` are each single
    PNG's text chunks (what made it, unmix.adapters.png_params). Returns what was written."""
    folder.mkdir(parents=True, exist_ok=True)
    if x.ndim != 4:
        return [str(save_png(render_batch(x), folder / "scatter.png"))]
    scale = scale or auto_scale(x.shape[-2])
    written = [str(save_png(make_grid(x[:GRID_LIMIT], nrow, scale=scale), folder / "grid.png"))]
    if singles:
        for i, (img, s) in enumerate(zip(x, seeds)):
            save_png(to_pil(img, scale), folder / (f"{stem}-{i:03d}.png" if stem else f"{i:04d}_seed{s}.png"),
                     png_info(texts[i]) if texts else None)
        written.append(f"{len(x)} single PNGs at {scale}x in {folder}/")
    return written


def save_npy(path: Path, x: torch.Tensor) -> str:
    """Raw samples as float32 .npy (values in [-1, 1]), written atomically."""
    with atomic_path(path, make_parents=True) as tmp:  # keeps the .npy suffix, so np.save adds none
        np.save(tmp, x.numpy().astype(np.float32))
    return str(path)
