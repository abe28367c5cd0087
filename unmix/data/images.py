"""Images in and out: reading one picture safely, tensors in [-1, 1] to PNG grids, GIFs, and 2-D scatter plots."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from unmix.errors import UnmixError
from unmix.store.files import atomic_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Fully decode an image (so truncated files fail here), with transparency composited on white.

    Returns mode "L" for greyscale sources and "RGB" otherwise; raises OSError/ValueError if unreadable.
    """
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I", "I;16", "I;16B", "F"):  # 16-bit / float greyscale: rescale to 8 bits
            a = np.asarray(img, dtype=np.float64)
            return Image.fromarray((a * (255.0 / max(a.max(), 1.0) if a.max() > 255 else 1.0)).clip(0, 255).astype(np.uint8))
        grey = img.mode in ("1", "L", "LA")
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        if not has_alpha:
            return img.convert("L" if grey else "RGB")
        rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    return white.convert("L" if grey else "RGB")


def read_image(path: str | os.PathLike) -> Image.Image:
    """open_image for a file the user named: any failure is one clear UnmixError."""
    if os.path.isdir(path):
        raise UnmixError(f"{path} is a folder, not an image file")
    if not os.path.isfile(path):
        raise UnmixError(f"image {path} does not exist")
    try:
        return open_image(path)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnmixError(f"cannot read image {path}: {e}") from None


def resize_crop(img: Image.Image, size: int) -> Image.Image:
    """Scale the short side to `size` (high-quality filter), then centre-crop to size x size."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.LANCZOS, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def pil_to_array(img: Image.Image) -> np.ndarray:
    """uint8 [C, H, W]."""
    a = np.array(img, dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] float [..., C, H, W] -> uint8 [..., H, W, C] (channel axis last for PIL)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def to_pil(x: torch.Tensor, scale: int = 1) -> Image.Image:
    """One image [C, H, W] in [-1, 1] as a PIL image, optionally enlarged by an integer factor (nearest)."""
    a = to_uint8(x)
    img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
    return img.resize((img.width * scale, img.height * scale), Image.NEAREST) if scale > 1 else img


def make_grid(x: torch.Tensor, nrow: int | None = None, pad: int = 2, scale: int = 1) -> Image.Image:
    """A batch [N, C, H, W] in [-1, 1] as one image: nrow per row (default about square), grey gaps."""
    n = x.shape[0]
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    tiles = [to_pil(t, scale) for t in x]
    w, h = tiles[0].size
    grey = 128 if tiles[0].mode == "L" else (128, 128, 128)
    grid = Image.new(tiles[0].mode, (nrow * (w + pad) + pad, rows * (h + pad) + pad), grey)
    for i, t in enumerate(tiles):
        grid.paste(t, (pad + (i % nrow) * (w + pad), pad + (i // nrow) * (h + pad)))
    return grid


def dataset_sheet(dataset, n: int = 64) -> Image.Image:
    """Up to n items spread evenly over an image dataset (so every class of a folder shows), as the network sees
    them after resizing, cropping and conversion: rows of 8, enlarged when small."""
    idx = torch.linspace(0, len(dataset) - 1, min(n, len(dataset))).round().long()
    x, _ = dataset.batch(idx)
    return make_grid(x, nrow=8, scale=auto_scale(x.shape[-2]))


def auto_scale(height: int, target: int = 64) -> int:
    """Integer enlargement so small images (8x8 digits) are visible in a grid."""
    return max(1, target // height)


def scatter(points: torch.Tensor, size: int = 512, extent: float = 1.6, color=(30, 60, 200)) -> Image.Image:
    """2-D points [N, 2] as a white PNG scatter plot over [-extent, extent]^2 (y up)."""
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    p = points.detach().float().cpu()
    xy = ((p * torch.tensor([1.0, -1.0]) / extent + 1) * size / 2).tolist()
    for x, y in xy:
        draw.ellipse((x - 1.5, y - 1.5, x + 1.5, y + 1.5), fill=color)
    draw.rectangle((0, 0, size - 1, size - 1), outline=(180, 180, 180))
    return img


def render_batch(x: torch.Tensor, nrow: int | None = None) -> Image.Image:
    """Images [N, C, H, W] as a grid, points [N, 2] as a scatter plot."""
    if not isinstance(x, torch.Tensor) or x.ndim not in (2, 4) or x.shape[0] < 1 or (x.ndim == 2 and x.shape[1] != 2):
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise UnmixError(f"can draw images [N, C, H, W] or 2-D points [N, 2], got {shape}")
    if x.ndim == 4 and x.shape[1] not in (1, 3):
        raise UnmixError(f"can draw images with 1 or 3 channels, got {x.shape[1]}")
    if nrow is not None and (not isinstance(nrow, int) or nrow < 1):
        raise UnmixError(f"nrow must be an integer >= 1, got {nrow!r}")
    if x.ndim == 2:
        return scatter(x)
    return make_grid(x, nrow, scale=auto_scale(x.shape[-2]))


def save_gif(frames: list[Image.Image], path: str | os.PathLike, ms_per_frame: int = 80, hold_last: int = 12) -> None:
    """An animated GIF that loops, pausing on the last frame for `hold_last` frames' time. (Pillow merges equal
    consecutive frames, adding their durations: a sampler's last step can look exactly like its result.)"""
    frames = [f.convert("RGB") for f in frames]
    durations = [ms_per_frame] * (len(frames) - 1) + [ms_per_frame * (1 + hold_last)]
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0, optimize=False)


def fit(img: Image.Image, shape) -> Image.Image:
    """The picture at a model's size: short side scaled and centre-cropped (square models), or resized."""
    h, w = shape[-2:]
    if img.size == (w, h):
        return img
    return resize_crop(img, h) if h == w else img.resize((w, h), Image.LANCZOS)


def load_image_for(path: str | os.PathLike, shape) -> tuple[torch.Tensor, tuple[int, int]]:
    """An image file as [C, H, W] in [-1, 1] with a model's channels and size, and the file's original size."""
    if shape[0] not in (1, 3):
        raise UnmixError(f"the model has {shape[0]} channels; only 1 (grey) or 3 (RGB) images can be read")
    img = read_image(path).convert("L" if shape[0] == 1 else "RGB")
    x = torch.from_numpy(pil_to_array(fit(img, shape)).copy()).float() / 127.5 - 1
    return x, img.size


def load_mask_for(path: str | os.PathLike, image_size: tuple[int, int], shape) -> torch.Tensor:
    """A mask image as [1, H, W] bool (True = white = fill in), checked against the image's size."""
    img = read_image(path).convert("L")
    if img.size != image_size:
        raise UnmixError(f"mask {path} is {img.size[0]}x{img.size[1]} pixels but the image is "
                         f"{image_size[0]}x{image_size[1]}; they must be the same size")
    return torch.from_numpy(np.asarray(fit(img, shape)) >= 128)[None]


def save_png(img: Image.Image, path: str | os.PathLike, pnginfo=None) -> Path:
    """Save a PNG atomically (a temporary sibling, then renamed), so a crash never leaves half a file; `pnginfo`
    (PIL's PngInfo) adds text chunks (unmix.adapters.png_params)."""
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG", pnginfo=pnginfo)
    return Path(path)
