"""Any folder of images as a dataset: each first-level subfolder is a class (files at the top are then
skipped), images are resized and centre-cropped to size x size, greyscale / RGBA / palette converted.
Unreadable files are listed and skipped; an empty folder or an image smaller than the size is an error.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from unmix.data import Dataset
from unmix.data.images import IMAGE_EXTENSIONS, open_image, pil_to_array, resize_crop
from unmix.errors import UnmixError


def _image_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return files


def _listing(items: list[str], limit: int = 10) -> str:
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_folder(path: str, size: int = 32) -> Dataset:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UnmixError(f"image folder {path!r} does not exist or is not a folder")
    files = _image_files(root)
    classes = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    if classes:
        files = [f for f in files if len(f.relative_to(root).parts) > 1]
    if not files:
        raise UnmixError(f"image folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    images, labels, kept, skipped, small = [], [], [], [], []
    for f in files:
        try:
            img = open_image(f)
        except (OSError, ValueError, SyntaxError) as e:
            skipped.append(f"{f.relative_to(root)} ({e})")
            continue
        if min(img.size) < size:
            small.append(f"{f.relative_to(root)} ({img.width}x{img.height})")
            continue
        images.append(img)
        kept.append(str(f.relative_to(root)))
        labels.append(classes.index(f.relative_to(root).parts[0]) if classes else 0)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s): {_listing(skipped)}", file=sys.stderr)
    if small:
        raise UnmixError(f"{len(small)} image(s) are smaller than the requested size {size}: {_listing(small, 3)}; "
                         f"choose a smaller --size or remove them")
    if not images:
        raise UnmixError(f"image folder {path!r} has no readable images")
    grey = all(img.mode == "L" for img in images)
    arrays = [pil_to_array(resize_crop(img if grey else img.convert("RGB"), size)) for img in images]
    data = torch.from_numpy(np.stack(arrays))
    return Dataset(f"folder:{path}", data, torch.as_tensor(labels) if classes else None, classes,
                   {"files": kept})
