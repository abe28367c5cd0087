"""Datasets, all small enough to hold in memory: `load_dataset("digits" | "emoji" | "swissroll" | "ring" |
"moons" | "folder:PATH", size=...)` gives a `Dataset` whose batches are float tensors in [-1, 1].

`load_dataset("emoji", styles="all", split="train")` is the five-style emoji data (unmix.data.emoji_styles); its
name, "emoji:styles=all:split=train", loads the same data again."""
from __future__ import annotations

from unmix.data.dataset import Dataset
from unmix.data.digits import load_digits
from unmix.data.emoji import load_emoji
from unmix.data.emoji_styles import load_emoji_styles, parse_spec, parse_styles, spec_name
from unmix.data.folder import load_folder
from unmix.data.toys import load_toy
from unmix.errors import UnmixError

NAMES = ("digits", "emoji", "swissroll", "ring", "moons", "folder:PATH", "emoji+sequences", "product",
         "backgrounds", "emoji:styles=all:split=train")


def load_dataset(spec: str, size: int | None = None, backgrounds: str | None = None, styles: str | None = None,
                 split: str | None = None) -> Dataset:
    """A dataset by name; `size` is the image side for emoji and folders (default 32); `backgrounds`
    ("folder:PATH") the background photos of product and backgrounds data (default: the offline ones); `styles`
    ("all" or a comma list of noto, twemoji, openmoji, fluent, fluent-flat; default noto) and `split` ("train",
    the default for the five-style data, "heldout" or "all") the emoji's."""
    if not isinstance(spec, str):
        raise UnmixError(f"data= must be a dataset name, got {spec!r}; valid: {', '.join(NAMES)}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise UnmixError(f"image size must be a positive integer, got {size!r}")
    if backgrounds is not None and spec not in ("product", "backgrounds"):
        raise UnmixError(f"backgrounds= is for the product and backgrounds data, not {spec!r}")
    emoji_spec = spec == "emoji" or spec.startswith("emoji:")
    if (styles is not None or split is not None) and not emoji_spec:
        raise UnmixError(f"styles= and split= are for the emoji data, not {spec!r}")
    if spec == "digits":
        if size not in (None, 8):
            raise UnmixError(f"digits are 8x8 images; size={size} is not available for them")
        return load_digits()
    if spec in ("swissroll", "ring", "moons"):
        return load_toy(spec)
    if emoji_spec:
        return _emoji(spec, size, styles, split)
    if spec == "emoji+sequences":  # +sequences: flags, keycaps, skin tones, ZWJ sequences too
        return load_emoji(size or 32, sequences=True)
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


def _emoji(spec: str, size: int | None, styles: str | None, split: str | None) -> Dataset:
    """Today's Noto emoji unless other styles or a split are asked for (in the arguments or in the name
    "emoji:styles=S:split=P"): then the five-style data, with its picture convention."""
    named = parse_spec(spec)
    if styles is not None and "styles" in named and parse_styles(styles) != parse_styles(named["styles"]):
        raise UnmixError(f"styles={styles!r} contradicts the dataset name {spec!r}")
    if split is not None and "split" in named and split != named["split"]:
        raise UnmixError(f"split={split!r} contradicts the dataset name {spec!r}")
    styles, split = styles or named.get("styles"), split or named.get("split")
    if split is None and parse_styles(styles) == ("noto",):
        return load_emoji(size or 32)
    return load_emoji_styles(size or 32, styles, split)


def dataset_spec(data: str, styles: str | None = None, split: str | None = None) -> str:
    """One name for a dataset and its emoji styles and split, which load_dataset reads back ("emoji" with
    styles="all" -> "emoji:styles=all:split=train"); other data keep their name."""
    if styles is None and split is None:
        return data
    if not (data == "emoji" or data.startswith("emoji:")):
        raise UnmixError(f"styles= and split= are for the emoji data, not {data!r}")
    named = parse_spec(data)
    chosen = parse_styles(styles or named.get("styles"))
    return spec_name(chosen, split or named.get("split") or "train")


__all__ = ["Dataset", "load_dataset", "dataset_spec", "NAMES"]
