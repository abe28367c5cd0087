"""Pictures from outside, for checking and measuring: a .npy of NCHW (or NHW) values in [-1, 1], or a folder of
image files, one picture each; fitted to a dataset's picture shape without inventing pixels."""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unmix.data import dataset_spec, load_dataset
from unmix.data.dataset import Dataset
from unmix.data.emoji_styles import parse_spec
from unmix.data.images import IMAGE_EXTENSIONS, open_image, pil_to_array
from unmix.errors import UnmixError


def read_pictures(path: str | os.PathLike) -> tuple[torch.Tensor, list[str]]:
    """(pictures float32 [N, C, H, W], their names): a .npy file (names "0", "1", ...) or the image files at the top
    of a folder, sorted (greyscale when all are). Files of another size than most (a contact sheet beside its
    pictures) are skipped with a warning."""
    path = Path(path)
    if path.is_dir():
        return _folder(path)
    if not path.is_file():
        raise UnmixError(f"{path} does not exist; give a folder of images or a .npy file")
    if path.suffix.lower() != ".npy":
        raise UnmixError(f"{path} is neither a folder of images nor a .npy file")
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UnmixError(f"{path} is not a plain .npy array of numbers ({e})") from None
    if not np.issubdtype(arr.dtype, np.number) or arr.ndim not in (3, 4):
        raise UnmixError(f"{path} must hold pictures NCHW (or NHW), got a {arr.dtype} array of shape {list(arr.shape)}")
    x = torch.from_numpy(arr.astype(np.float32))
    x = x[:, None] if x.ndim == 3 else x
    return x, [str(i) for i in range(len(x))]


def _folder(root: Path) -> tuple[torch.Tensor, list[str]]:
    images = {}
    for f in sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
        try:
            images[f.name] = open_image(f)
        except (OSError, ValueError, SyntaxError) as e:
            raise UnmixError(f"cannot read image {f}: {e}") from None
    if not images:
        raise UnmixError(f"{root} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    size = Counter(img.size for img in images.values()).most_common(1)[0][0]
    other = [name for name, img in images.items() if img.size != size]
    if other:
        print(f"warning: skipped {len(other)} image(s) not {size[0]}x{size[1]} like the rest: {', '.join(other[:5])}",
              file=sys.stderr)
    kept = {name: img for name, img in images.items() if img.size == size}
    mode = "L" if all(img.mode == "L" for img in kept.values()) else "RGB"
    arrays = [pil_to_array(img.convert(mode)) for img in kept.values()]
    return torch.from_numpy(np.stack(arrays)).float() / 127.5 - 1, list(kept)


def fit_pictures(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Pictures at a dataset's (C, H, W): grey as colour or colour that is grey as one channel, and pictures enlarged
    by a whole factor (as `unmix sample` writes them) averaged back; anything else is an error."""
    c, h, w = shape
    if x.shape[1] != c:
        if x.shape[1] == 1 and c == 3:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] == 3 and c == 1 and bool((x == x[:, :1]).all()):
            x = x[:, :1]
        else:
            raise UnmixError(f"the pictures have {x.shape[1]} channels, the data {c}")
    fy, fx = x.shape[-2] // h, x.shape[-1] // w
    if x.shape[-2:] != (h, w) and (fy != fx or fy < 1 or x.shape[-2:] != (fy * h, fx * w)):
        raise UnmixError(f"pictures of {x.shape[-1]}x{x.shape[-2]} pixels do not fit data of {w}x{h} (nor a whole "
                         "multiple of it)")
    return F.avg_pool2d(x, fy) if fy > 1 else x


def dataset_pictures(spec: str, side: int) -> Dataset:
    """A dataset of pictures, read at `side` where it can be read at any size (digits are 8 px)."""
    ds = load_dataset(spec, None if spec == "digits" else side)
    if not ds.is_image:
        raise UnmixError(f"{spec} holds points, not pictures; the copy check compares pictures")
    return ds


def heldout_spec(name: str) -> str | None:
    """The held-out split of a dataset trained on its train split ("emoji:styles=all:split=train"), else None."""
    if name.startswith("emoji:") and parse_spec(name).get("split") == "train":
        return dataset_spec(name, split="heldout")
    return None
