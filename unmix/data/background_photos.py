"""Where product photos' backgrounds and scenes come from: photos shipped inside the scikit-image and scikit-learn
wheels, GIMP patterns and Debian desktop wallpapers where installed, a user's own folder; each read once per
process, downscaled, and split into train and held-out test images by name."""
from __future__ import annotations

import functools
import os
import struct
from pathlib import Path

import numpy as np
import torch

from unmix.errors import UnmixError

SKIMAGE_TRAIN = ("astronaut", "chelsea", "hubble_deep_field", "ihc", "motorcycle_left", "retina", "rocket", "brick",
                 "grass", "camera", "color", "page")
SKIMAGE_TEST = ("coffee", "motorcycle_right", "gravel", "moon")
SKLEARN_SPLIT = {"china.jpg": "train", "flower.jpg": "test"}
GIMP_PATTERN_DIRS = ("/usr/share/gimp/2.0/patterns", "/usr/share/gimp/3.0/patterns")
WALLPAPER_DIRS = ("/usr/share/backgrounds/mate", "/usr/share/backgrounds/gnome", "/usr/share/images/desktop-base")
BACKGROUND_SIDE = 256  # photos are downscaled to at most this side once, when loaded
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def read_gimp_pattern(path: str | os.PathLike) -> torch.Tensor:
    """A GIMP .pat texture as float RGB [3, H, W] in [0, 1]. Format (GIMP's devel-docs/pat.txt): big-endian
    u32 header_size, version (1), width, height, bytes per pixel (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA), the
    magic "GPAT", the UTF-8 name up to header_size, then width * height * bytes raw pixels, row by row."""
    data = Path(path).read_bytes()
    if len(data) < 24 or data[20:24] != b"GPAT":
        raise UnmixError(f"{path} is not a GIMP pattern (.pat files start with a 24-byte header holding 'GPAT')")
    header, version, width, height, depth = struct.unpack(">5I", data[:20])
    if version != 1 or depth not in (1, 2, 3, 4) or len(data) < header + width * height * depth:
        raise UnmixError(f"{path} is a GIMP pattern this reader does not understand (version {version}, {depth} bytes "
                         "per pixel); version 1 with 1-4 bytes per pixel is supported")
    px = np.frombuffer(data, np.uint8, width * height * depth, header).reshape(height, width, depth)
    rgb = np.repeat(px[..., :1], 3, axis=2) if depth <= 2 else px[..., :3]
    return torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)


def _read_image(path: str | os.PathLike) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        s = BACKGROUND_SIDE / max(im.size)
        if s < 1:
            im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255).permute(2, 0, 1)


def _files(folder: str, suffixes: tuple[str, ...]) -> list[Path]:
    p = Path(folder)
    return sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes) if p.is_dir() else []


@functools.lru_cache(maxsize=None)
def offline_backgrounds(split: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """(name, RGB [3, H, W] in [0, 1]) of every offline background photo/texture of a split that is installed:
    scikit-image's and scikit-learn's shipped photos, and where present GIMP's patterns (split by name: every 5th
    file is a test background). Desktop wallpapers are not among them: they are the scenes (`scene_photos`)."""
    out: list[tuple[str, torch.Tensor]] = []
    try:
        import skimage

        folder = Path(skimage.__file__).parent / "data"
        for name in SKIMAGE_TRAIN if split == "train" else SKIMAGE_TEST:
            found = [f for f in (folder / f"{name}.png", folder / f"{name}.jpg") if f.is_file()]
            if found:
                out.append((f"skimage:{name}", _read_image(found[0])))
    except ImportError:
        pass
    try:
        import sklearn.datasets

        folder = Path(sklearn.datasets.__file__).parent / "images"
        for name, s in SKLEARN_SPLIT.items():
            if s == split and (folder / name).is_file():
                out.append((f"sklearn:{name}", _read_image(folder / name)))
    except ImportError:
        pass
    return tuple(out) + _every_fifth([f for d in GIMP_PATTERN_DIRS for f in _files(d, (".pat",))], split)


@functools.lru_cache(maxsize=None)
def scene_photos(split: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """(name, RGB [3, H, W] in [0, 1]) of the scenes a product can be placed in: Debian's desktop wallpapers
    (mate-backgrounds, gnome-backgrounds, desktop-base: meadows, dunes, wood, water, soft abstracts; every 5th file
    held out for the test split); where none is installed, the offline backgrounds of the split."""
    found = _every_fifth([f for d in WALLPAPER_DIRS for f in _files(d, IMAGE_SUFFIXES)], split)
    return found or offline_backgrounds(split)


def _every_fifth(files: list[Path], split: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """The readable images of `files` in the split: every 5th one (in sorted order) is a test image."""
    out = []
    for k, f in enumerate(files):
        if (k % 5 == 4) == (split == "test"):
            try:
                out.append((str(f), read_gimp_pattern(f) if f.suffix == ".pat" else _read_image(f)))
            except (UnmixError, OSError):
                continue
    return tuple(out)


def folder_backgrounds(folder: str) -> tuple[tuple[str, torch.Tensor], ...]:
    """A user's own backgrounds: every image in `folder` (recursively)."""
    files = _files(folder, IMAGE_SUFFIXES)
    if not files:
        raise UnmixError(f"backgrounds folder {folder!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return tuple((str(f), _read_image(f)) for f in files)


__all__ = ["offline_backgrounds", "scene_photos", "folder_backgrounds", "read_gimp_pattern", "IMAGE_SUFFIXES"]
