"""Reading what a browser sends: an uploaded picture of any size (checked before it is decoded), and the pictures
the page sends back at the model's own size (a chosen image, a painted mask) as PNG data URLs.

Uploads are probed before decoding, so a huge-dimension file is refused without allocating it, and decoded fully
(truncated files fail here), with a fixed list of formats (none that hand the file to an external program).
"""
from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from unmix.data.images import fit, open_image, pil_to_array
from unmix.errors import UnmixError

FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
_PNG_URL = "data:image/png;base64,"


def read_upload(data: bytes, shape, max_bytes: int, max_side: int, max_pixels: int) -> torch.Tensor:
    """An uploaded image file as [C, H, W] in [-1, 1] at the model's channels and size (short side scaled,
    centre-cropped); anything that is not a readable picture within the bounds is one UnmixError."""
    return _tensor(decode_upload(data, max_bytes, max_side, max_pixels), shape)


def read_photo_upload(data: bytes, max_bytes: int, max_side: int, max_pixels: int) -> torch.Tensor:
    """An uploaded photo as RGB [3, H, W] in [-1, 1] at its own size (transparency laid over white, as
    unmix.apps.product.read_photo does for files)."""
    img = decode_upload(data, max_bytes, max_side, max_pixels)
    return _tensor(img, (3, img.height, img.width))


def decode_upload(data: bytes, max_bytes: int, max_side: int, max_pixels: int) -> Image.Image:
    """An uploaded image file, probed within the bounds before it is decoded (see the module's note)."""
    if not data:
        raise UnmixError("the uploaded file is empty")
    if len(data) > max_bytes:
        raise UnmixError(f"the uploaded file is {len(data) / 2**20:.1f} MiB; the limit is {max_bytes / 2**20:g} MiB")
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as e:  # PIL's own bound, far above ours
        raise UnmixError(f"the uploaded image is too large ({e})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UnmixError(f"the uploaded file is not an image that can be read (valid: {', '.join(FORMATS)})") from None
    if max(width, height) > max_side or width * height > max_pixels:
        raise UnmixError(f"the uploaded image is {width}x{height} pixels; the limit is {max_side} pixels a side "
                         f"and {max_pixels / 1e6:g} million in all")
    if min(width, height) < 1:
        raise UnmixError("the uploaded image has no pixels")
    try:
        img = open_image(io.BytesIO(data))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise UnmixError(f"the uploaded image is damaged or truncated ({e})") from None
    return img


def read_image_url(url, shape, what: str = "image") -> torch.Tensor:
    """A PNG data URL of exactly the model's size (as the page sends a chosen image) as [C, H, W] in [-1, 1]."""
    return _tensor(_png(url, shape, what), shape)


def read_mask_url(url, shape) -> torch.Tensor:
    """A painted mask (PNG data URL at the model's size) as a bool [1, H, W]: True where it is white, with any
    transparency laid over black (so a canvas' unpainted, transparent pixels are "keep")."""
    img = _png(url, shape, "mask")
    if "A" in img.getbands() or "transparency" in img.info:
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        black.alpha_composite(img.convert("RGBA"))
        img = black
    return torch.from_numpy(np.asarray(img.convert("L")) >= 128)[None]


def _png(url, shape, what: str) -> Image.Image:
    if not isinstance(url, str) or not url.startswith(_PNG_URL):
        raise UnmixError(f"{what} must be a PNG data URL (data:image/png;base64,...)")
    try:
        with Image.open(io.BytesIO(base64.b64decode(url[len(_PNG_URL):], validate=True)), formats=("PNG",)) as img:
            size = img.size
            if size == (shape[-1], shape[-2]):
                img.load()
                img = img.copy()
    except (binascii.Error, UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UnmixError(f"{what} is not a readable PNG") from None
    if size != (shape[-1], shape[-2]):
        raise UnmixError(f"{what} is {size[0]}x{size[1]} pixels; the model takes {shape[-1]}x{shape[-2]}")
    return img


def _tensor(img: Image.Image, shape) -> torch.Tensor:
    mode = "L" if shape[0] == 1 else "RGB"
    try:
        img = img if img.mode == mode else img.convert(mode)
    except (ValueError, OSError) as e:
        raise UnmixError(f"an image in mode {img.mode} cannot be converted to {mode} ({e})") from None
    return torch.from_numpy(pil_to_array(fit(img, shape)).copy()).float() / 127.5 - 1
