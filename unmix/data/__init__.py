"""Datasets, all small enough to hold in memory: `load_dataset("digits" | "emoji" | "swissroll" | "ring" |
"moons" | "folder:PATH", size=...)` gives a `Dataset` whose batches are float tensors in [-1, 1]."""
from __future__ import annotations

from unmix.data.dataset import Dataset
from unmix.data.digits import load_digits
from unmix.data.emoji import load_emoji
from unmix.data.folder import load_folder
from unmix.data.toys import load_toy
from unmix.errors import UnmixError

NAMES = ("digits", "emoji", "swissroll", "ring", "moons", "folder:PATH", "emoji+sequences", "product",
         "backgrounds")


def load_dataset(spec: str, size: int | None = None, backgrounds: str | None = None) -> Dataset:
    """A dataset by name; `size` is the image side for emoji and folders (default 32); `backgrounds`
    ("folder:PATH") the background photos of product and backgrounds data (default: the offline ones)."""
    if not isinstance(spec, str):
        raise UnmixError(f"data= must be a dataset name, got {spec!r}; valid: {', '.join(NAMES)}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise UnmixError(f"image size must be a positive integer, got {size!r}")
    if backgrounds is not None and spec not in ("product", "backgrounds"):
        raise UnmixError(f"backgrounds= is for the product and backgrounds data, not {spec!r}")
    if spec == "digits":
        if size not in (None, 8):
            raise UnmixError(f"digits are 8x8 images; size={size} is not available for them")
        return load_digits()
    if spec in ("swissroll", "ring", "moons"):
        return load_toy(spec)
    if spec in ("emoji", "emoji+sequences"):  # +sequences: flags, keycaps, skin tones, ZWJ sequences too
        return load_emoji(size or 32, sequences=spec == "emoji+sequences")
    if spec == "product":  # generated (photo, alpha) pairs for the product jobs, 32 or 64 px (unmix.apps.product)
        from unmix.data.product_job import ProductJob

        if size not in (None, 32, 64):
            raise UnmixError(f"the product recipes are 32 or 64 px; size={size} is not available")
        return ProductJob(size or 32, backgrounds=backgrounds)
    if spec == "backgrounds":  # crops of scene photos: the model that draws unmix.apps.product's scenes
        from unmix.data.backgrounds import Backgrounds

        return Backgrounds(size or 32, backgrounds=backgrounds or "scenes")
    if spec.startswith("folder:"):
        return load_folder(spec[len("folder:"):], size or 32)
    raise UnmixError(f"unknown dataset {spec!r}; valid: {', '.join(NAMES)}")


__all__ = ["Dataset", "load_dataset", "NAMES"]
