"""The five-style emoji data: the same emoji drawn by Noto, Twemoji, OpenMoji, Fluent and Fluent flat, so that a model
can learn what an emoji is apart from how one artist draws it, and be tested on (emoji, style) pairs it never saw.

Identities are the fully-qualified emoji of Unicode's emoji-test.txt (the shipped table, unmix.data.emoji) without
skin-tone modifiers (U+1F3FB..1F3FF) or hair components (U+1F9B0..1F9B3), kept where every chosen style has artwork.
Pictures follow one convention (unmix.data.emoji_sources). Items are ordered by style, then in Unicode's order.

The composition split (outside evaluators use the same): a pair is held out iff
`int(sha256(f"{codepoints}:{style}".encode()).hexdigest(), 16) % 10 == 0`; "train" leaves those pairs out, "heldout"
is exactly them, "all" both (with `info["held_out"]` saying which).

The dataset's name is its spec, "emoji:styles=all:split=train" (or a comma list of styles), which `load_dataset`
reads back: a checkpoint that records `describe()` reloads the same pictures. Pictures are drawn once per style at
64 px and cached under $XDG_CACHE_HOME/unmix/emoji-styles; 32 px is derived from them.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from tqdm import tqdm

from unmix.data import emoji_sources as src
from unmix.data.dataset import Dataset
from unmix.data.emoji import emoji_table
from unmix.errors import UnmixError
from unmix.store.files import atomic_path, cache_dir
from unmix.text.captions import emoji_captions, unique

STYLE_IDS = tuple(src.STYLES)  # noto, twemoji, openmoji, fluent, fluent-flat: the split rule's spellings, in order
SPLITS = ("train", "heldout", "all")
SIZES = (32, 64)
CODEPOINTS = re.compile(r"[0-9A-F]{4,6}( [0-9A-F]{4,6})*")
EXCLUDED = (range(0x1F3FB, 0x1F400), range(0x1F9B0, 0x1F9B4))  # skin-tone modifiers, hair components
VERSION = "v1"  # of the picture convention's code: part of every cache key


def is_held_out(codepoints: str, style: str) -> bool:
    """Whether the pair (emoji, style) is in the held-out split: sha256 of "codepoints:style" mod 10 == 0, with the
    code points as emoji-test.txt's first column writes them ("1F34E", "2764 FE0F")."""
    if style not in STYLE_IDS:
        raise UnmixError(f"unknown emoji style {style!r}; valid: {', '.join(STYLE_IDS)}")
    if not isinstance(codepoints, str) or not CODEPOINTS.fullmatch(codepoints):
        raise UnmixError(f"codepoints must be upper-case hex joined by single spaces, as in emoji-test.txt "
                         f"('1F34E', '2764 FE0F'), got {codepoints!r}")
    return int(hashlib.sha256(f"{codepoints}:{style}".encode()).hexdigest(), 16) % 10 == 0


def parse_styles(styles: str | None) -> tuple[str, ...]:
    """"all", or a comma list of style ids, as the chosen styles in canonical order (default: noto)."""
    if styles is None:
        return ("noto",)
    if styles == "all":
        return STYLE_IDS
    chosen = [s.strip() for s in str(styles).split(",") if s.strip()]
    wrong = [s for s in chosen if s not in STYLE_IDS]
    if wrong or not chosen:
        raise UnmixError(f"unknown emoji style {', '.join(wrong) or repr(styles)}; valid: all, or a comma list of "
                         f"{', '.join(STYLE_IDS)}")
    return tuple(s for s in STYLE_IDS if s in chosen)


def spec_name(styles: tuple[str, ...], split: str) -> str:
    """The dataset name that load_dataset reads back: "emoji:styles=all:split=train"."""
    return f"emoji:styles={'all' if styles == STYLE_IDS else ','.join(styles)}:split={split}"


def parse_spec(spec: str) -> dict[str, str]:
    """{"styles": ..., "split": ...} from "emoji:styles=S:split=P" (either part may be left out)."""
    out = {}
    for part in spec.split(":")[1:]:
        key, eq, value = part.partition("=")
        if not eq or key not in ("styles", "split") or key in out:
            raise UnmixError(f"cannot read the dataset name {spec!r}; write emoji:styles=all:split=train (styles: all "
                             f"or a comma list of {', '.join(STYLE_IDS)}; split: {', '.join(SPLITS)})")
        out[key] = value
    return out


def identities(styles: tuple[str, ...] = STYLE_IDS, found: dict[str, dict[str, str]] | None = None) -> list:
    """The emoji (unmix.data.emoji.Emoji rows) that every chosen style draws, in Unicode's order; `found` the
    styles' artwork when already looked up."""
    found = found or {s: artwork(s) for s in styles}
    return [e for e in candidates() if all(src.codepoints(e) in found[s] for s in styles)]


def candidates() -> list:
    """Fully-qualified emoji without skin-tone modifiers or hair components."""
    return [e for e in emoji_table() if e.group != "Component"
            and not any(ord(c) in r for c in e.text for r in EXCLUDED)]


def artwork(style: str) -> dict[str, str]:
    """{codepoints: what to draw} for the candidates this style has artwork for."""
    return src.find_artwork(style, candidates())


def cache_path(style: str, found: dict[str, str] | None = None):
    """Where the style's pictures are cached: keyed by its sources, the candidates it draws and the convention."""
    found = artwork(style) if found is None else found
    listing = "\n".join(f"{k}\t{os.path.basename(v)}" for k, v in found.items())
    key = hashlib.sha256(f"{VERSION}:{style}:{src.source_version(style)}:{src.SIDE}\n{listing}".encode()).hexdigest()
    return cache_dir() / "emoji-styles" / f"{style}-{src.SIDE}-{key[:16]}.npz"


def pictures(style: str, found: dict[str, str] | None = None) -> tuple[list[str], np.ndarray]:
    """(codepoints, uint8 [N, 3, 64, 64]) for every candidate the style draws (`found`: its artwork, when already
    looked up), from the cache when its sources, the candidates and the convention are unchanged."""
    found = artwork(style) if found is None else found
    keys, path = list(found), cache_path(style, found)
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            if z["keys"].tolist() == keys:
                return keys, z["images"]
    print(f"drawing {len(keys)} {src.STYLES[style].display} emoji at {src.SIDE} px (cached in {path.parent})",
          file=sys.stderr)
    images = np.empty((len(keys), 3, src.SIDE, src.SIDE), dtype=np.uint8)
    workers = 1 if style == "noto" else min(2, os.cpu_count() or 1)  # FreeType fonts are not shared across threads
    pool = ThreadPoolExecutor(workers)
    try:
        drawn = pool.map(lambda s: src.picture(src.draw(style, s)), found.values())
        for i, image in enumerate(tqdm(drawn, total=len(keys), desc=style, unit="emoji", leave=False, disable=None)):
            images[i] = image
    finally:
        pool.shutdown(cancel_futures=True)  # Ctrl-C stops at once instead of drawing the queued rest
    with atomic_path(path, make_parents=True) as tmp:
        np.savez(tmp, images=images, keys=np.asarray(keys))
    return keys, images


def style_captions(e, display: str) -> list[str]:
    """"red apple, OpenMoji style" first, then the keyword variants of unmix.text.captions and the group, each with
    the style."""
    return unique(f"{c}, {display} style" for c in [*emoji_captions(e.name, e.keywords), e.group])


def load_emoji_styles(size: int = 32, styles: str | None = "all", split: str | None = "train") -> Dataset:
    """The five-style emoji as a Dataset (see the module docstring). Labels are the styles (class names: their
    display names, "Noto", "Twemoji", "OpenMoji", "Fluent", "Fluent flat", of the chosen styles); `captions[i]` the
    caption variants; `info` per-item lists "codepoints" (hex, as emoji-test.txt), "emoji", "short_names", "names",
    "keywords", "groups", "subgroups", "styles" (ids) and "held_out"."""
    chosen, split = parse_styles(styles), split or "train"
    if split not in SPLITS:
        raise UnmixError(f"split= must be one of {', '.join(SPLITS)}, got {split!r}")
    if size not in SIZES:
        raise UnmixError(f"the emoji styles are drawn at 32 or 64 px; size={size} is not available")
    src.check_installed(chosen)  # a missing source is named before any work
    found = {s: artwork(s) for s in chosen}
    kept = identities(chosen, found)
    images, rows = [], []
    for style in chosen:
        keys, drawn = pictures(style, found[style])
        at = {k: i for i, k in enumerate(keys)}
        pairs = [(e, is_held_out(src.codepoints(e), style)) for e in kept]
        pairs = [(e, h) for e, h in pairs if split == "all" or h == (split == "heldout")]
        images.append(drawn[[at[src.codepoints(e)] for e, _ in pairs]])
        rows += [(e, style, h) for e, h in pairs]
    data = np.concatenate(images)
    if size == 32:
        data = src.halve(data)
    info = {
        "codepoints": [src.codepoints(e) for e, _, _ in rows],
        "emoji": [e.text for e, _, _ in rows],
        "short_names": [e.name for e, _, _ in rows],
        "names": [e.unicode_name or e.name for e, _, _ in rows],
        "keywords": [list(e.keywords) for e, _, _ in rows],
        "groups": [e.group for e, _, _ in rows],
        "subgroups": [e.subgroup for e, _, _ in rows],
        "styles": [s for _, s, _ in rows],
        "held_out": [h for _, _, h in rows],
    }
    labels = torch.as_tensor([chosen.index(s) for _, s, _ in rows], dtype=torch.long)
    captions = [style_captions(e, src.STYLES[s].display) for e, s, _ in rows]
    return Dataset(spec_name(chosen, split), torch.from_numpy(data), labels, [src.STYLES[s].display for s in chosen],
                   info, captions=captions)
