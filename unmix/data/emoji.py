"""About 1,400 single-codepoint emoji rendered from Debian's Noto Color Emoji font.

The font is a bitmap (CBDT) font that only renders at size 109; each glyph is drawn centred on a
136x136 canvas, composited on white and resized to size x size RGB. The code points are read from
the font's own cmap table, keeping those with a Unicode name and dropping pieces that are not
emoji on their own (ASCII keycap bases, regional indicators, skin tones, joiners, tags).
Groups follow Unicode's emoji groups, assigned by code point range (approximate at block edges).
Rendered arrays are cached under $XDG_CACHE_HOME/unmix (default ~/.cache/unmix).
"""
from __future__ import annotations

import hashlib
import os
import struct
import sys
import unicodedata
from pathlib import Path

import numpy as np
import torch

from unmix.data import Dataset
from unmix.errors import UnmixError

FONT_PATHS = (
    "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/noto/NotoColorEmoji.ttf",
    "/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf",
)
FONT_SIZE = 109  # the only size a CBDT Noto Color Emoji renders at
CANVAS = 136

GROUPS = ["Smileys & Emotion", "People & Body", "Component", "Animals & Nature", "Food & Drink",
          "Travel & Places", "Activities", "Objects", "Symbols", "Flags"]
S, P, C, A, F, T, V, O, Y, L = range(10)
# (first, last, group); the first matching range wins; anything else is a Symbol.
_RANGES = [
    (0x1F600, 0x1F644, S), (0x1F645, 0x1F64F, P), (0x1F910, 0x1F917, S), (0x1F918, 0x1F91F, P),
    (0x1F920, 0x1F92F, S), (0x1F930, 0x1F93E, P), (0x1F970, 0x1F97A, S), (0x1F9D0, 0x1F9D0, S),
    (0x1FAE0, 0x1FAEF, S), (0x1F48B, 0x1F49F, S), (0x1F4A2, 0x1F4AD, S), (0x2620, 0x2620, S),
    (0x2639, 0x263A, S), (0x2763, 0x2764, S), (0x1F440, 0x1F450, P), (0x1F463, 0x1F487, P),
    (0x1F90C, 0x1F90F, P), (0x1F9B4, 0x1F9B9, P), (0x1F9BB, 0x1F9BF, P), (0x1F9CD, 0x1F9DF, P),
    (0x1F9E0, 0x1F9E0, P), (0x1FAC0, 0x1FAC5, P), (0x1FAF0, 0x1FAFF, P), (0x261D, 0x261D, P),
    (0x270A, 0x270D, P), (0x1F3C3, 0x1F3C4, P), (0x1F3C7, 0x1F3C7, P), (0x1F3CA, 0x1F3CC, P),
    (0x1F574, 0x1F575, P), (0x1F57A, 0x1F57A, P), (0x1F590, 0x1F596, P), (0x1F6A3, 0x1F6A3, P),
    (0x1F6B4, 0x1F6B6, P), (0x1F6C0, 0x1F6C0, P), (0x1F6CC, 0x1F6CC, P), (0x26F7, 0x26F7, P), (0x26F9, 0x26F9, P),
    (0x1F9B0, 0x1F9B3, C),
    (0x1F400, 0x1F43F, A), (0x1F980, 0x1F9AE, A), (0x1F331, 0x1F344, A), (0x1F490, 0x1F490, A),
    (0x1F4AE, 0x1F4AE, A), (0x1F3F5, 0x1F3F5, A), (0x1F54A, 0x1F54A, A), (0x1FAB0, 0x1FABF, A), (0x2618, 0x2618, A), (0x1F577, 0x1F578, A),
    (0x1F32D, 0x1F330, F), (0x1F345, 0x1F37F, F), (0x1F950, 0x1F96F, F), (0x1F9C0, 0x1F9CB, F),
    (0x1FAD0, 0x1FADF, F), (0x2615, 0x2615, F), (0x1F942, 0x1F944, F), (0x1F9C2, 0x1F9C2, F),
    (0x1F300, 0x1F32C, T), (0x1F3D4, 0x1F3F0, T), (0x1F680, 0x1F6A2, T), (0x1F6A4, 0x1F6A8, T),
    (0x1F6E0, 0x1F6FF, T), (0x1F550, 0x1F567, T), (0x1F5FA, 0x1F5FF, T), (0x1F54B, 0x1F54D, T),
    (0x2600, 0x2604, T), (0x2614, 0x2614, T), (0x26C4, 0x26C8, T), (0x26E9, 0x26FD, T), (0x2708, 0x2708, T),
    (0x2744, 0x2744, T), (0x231A, 0x231B, T), (0x23F0, 0x23F3, T), (0x2B50, 0x2B50, T), (0x1F3A0, 0x1F3A2, T),
    (0x1F488, 0x1F488, T), (0x1F4BA, 0x1F4BA, T), (0x1F6CB, 0x1F6CB, O), (0x1F6CE, 0x1F6D2, O),
    (0x1F6D5, 0x1F6DF, T), (0x1F9ED, 0x1F9ED, T), (0x1F9F1, 0x1F9F1, T), (0x26A1, 0x26A1, T),
    (0x1F380, 0x1F38B, V), (0x1F38D, 0x1F391, V), (0x1F396, 0x1F39F, V), (0x1F3A3, 0x1F3A3, V),
    (0x1F3A8, 0x1F3A8, V), (0x1F3AB, 0x1F3AB, V), (0x1F3AE, 0x1F3AF, V), (0x1F3B0, 0x1F3B3, V),
    (0x1F3BD, 0x1F3C0, V), (0x1F3C2, 0x1F3C2, V), (0x1F3C5, 0x1F3C6, V), (0x1F3C8, 0x1F3C9, V), (0x1F3CF, 0x1F3D3, V),
    (0x1F3F8, 0x1F3F8, V), (0x1F940, 0x1F941, V), (0x1F945, 0x1F94F, V), (0x1F9E7, 0x1F9E9, V),
    (0x1F9F5, 0x1F9F6, V), (0x1FA80, 0x1FA8F, V), (0x1F004, 0x1F004, V), (0x1F0CF, 0x1F0CF, V),
    (0x26BD, 0x26BE, V), (0x26F3, 0x26F3, V), (0x26F8, 0x26F8, V), (0x265F, 0x2666, V), (0x2728, 0x2728, V),
    (0x1F0A0, 0x1F0FF, V), (0x1F9FF, 0x1F9FF, V), (0x1F52E, 0x1F52E, V), (0x1F9F8, 0x1F9F8, V),
    (0x1F3C1, 0x1F3C1, L), (0x1F6A9, 0x1F6A9, L), (0x1F38C, 0x1F38C, L), (0x1F3F3, 0x1F3F4, L),
    (0x1F451, 0x1F462, O), (0x1F489, 0x1F48A, O), (0x1F4B0, 0x1F4FF, O), (0x1F50A, 0x1F52D, O),
    (0x1F56F, 0x1F5F9, O), (0x1F3A4, 0x1F3AD, O), (0x1F3B4, 0x1F3BC, O), (0x1F392, 0x1F393, O),
    (0x1F6AA, 0x1F6AC, O), (0x1F6BD, 0x1F6BF, O), (0x1F6C1, 0x1F6C5, O), (0x1F97B, 0x1F97F, O),
    (0x1F9BA, 0x1F9BA, O), (0x1F9E2, 0x1F9FF, O), (0x1FA70, 0x1FA7F, O), (0x1FA90, 0x1FAAF, O),
    (0x260E, 0x260E, O), (0x2692, 0x269C, O), (0x26B0, 0x26B1, O), (0x26CF, 0x26D3, O), (0x2702, 0x2702, O),
    (0x2709, 0x2709, O), (0x270F, 0x2712, O), (0x2328, 0x2328, O), (0x23F1, 0x23F2, O), (0x1F3F7, 0x1F3F7, O),
]


def group_of(cp: int) -> int:
    """Index into GROUPS for a code point (first matching range, else Symbols)."""
    for lo, hi, g in _RANGES:
        if lo <= cp <= hi:
            return g
    return Y


def _is_standalone(cp: int) -> bool:
    skip = (cp < 0xA9 or 0x1F1E6 <= cp <= 0x1F1FF or 0x1F3FB <= cp <= 0x1F3FF or cp >= 0xE0000
            or cp in (0x200C, 0x200D, 0x20E3, 0xFE0F))
    return not skip and bool(unicodedata.name(chr(cp), ""))


def font_codepoints(path: str) -> list[int]:
    """Code points mapped by a TrueType font's format-12 cmap subtable (read directly: no fontTools needed)."""
    data = Path(path).read_bytes()
    tables = {}
    for i in range(struct.unpack(">H", data[4:6])[0]):
        tag, _, off, length = struct.unpack(">4sIII", data[12 + 16 * i: 28 + 16 * i])
        tables[tag] = off
    base = tables[b"cmap"]
    cps: set[int] = set()
    for i in range(struct.unpack(">H", data[base + 2: base + 4])[0]):
        _, _, sub = struct.unpack(">HHI", data[base + 4 + 8 * i: base + 12 + 8 * i])
        so = base + sub
        if struct.unpack(">H", data[so: so + 2])[0] == 12:
            for g in range(struct.unpack(">I", data[so + 12: so + 16])[0]):
                lo, hi, _ = struct.unpack(">III", data[so + 16 + 12 * g: so + 28 + 12 * g])
                cps.update(range(lo, hi + 1))
    return sorted(cps)


def find_font() -> str:
    for p in [os.environ.get("UNMIX_EMOJI_FONT", ""), *FONT_PATHS]:
        if p and os.path.isfile(p):
            return p
    raise UnmixError(
        "emoji font not found (NotoColorEmoji.ttf); install it with "
        "`sudo apt-get install fonts-noto-color-emoji` or point UNMIX_EMOJI_FONT at the .ttf file"
    )


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "unmix"


def render(font_path: str, codepoints: list[int], size: int) -> np.ndarray:
    """uint8 [N, 3, size, size]: each emoji on white."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, FONT_SIZE)
    out = np.empty((len(codepoints), 3, size, size), dtype=np.uint8)
    margin = 12
    for i, cp in enumerate(codepoints):
        canvas = Image.new("RGBA", (CANVAS + 2 * margin,) * 2, (255, 255, 255, 0))
        ImageDraw.Draw(canvas).text((CANVAS // 2 + margin,) * 2, chr(cp), font=font, embedded_color=True, anchor="mm")
        glyph = canvas.crop((margin, margin, margin + CANVAS, margin + CANVAS))
        white = Image.new("RGBA", glyph.size, (255, 255, 255, 255))
        white.alpha_composite(glyph)
        out[i] = np.asarray(white.convert("RGB").resize((size, size), Image.LANCZOS)).transpose(2, 0, 1)
    return out


def load_emoji(size: int = 32) -> Dataset:
    font = find_font()
    stat = os.stat(font)
    key = hashlib.sha256(f"{font}:{stat.st_size}:{stat.st_mtime_ns}:{size}:{unicodedata.unidata_version}:v1".encode())
    path = cache_dir() / f"emoji-{size}-{key.hexdigest()[:12]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:
            images, cps = z["images"], z["codepoints"].tolist()
    else:
        cps = [cp for cp in font_codepoints(font) if _is_standalone(cp)]
        print(f"rendering {len(cps)} emoji at {size}x{size} (cached in {path.parent})", file=sys.stderr)
        images = render(font, cps, size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, images=images, codepoints=np.asarray(cps, dtype=np.int64))
        os.replace(tmp, path)
    groups = [group_of(cp) for cp in cps]
    used = sorted(set(groups))  # classes are the groups that occur, in Unicode's order
    labels = torch.as_tensor([used.index(g) for g in groups], dtype=torch.long)
    info = {
        "names": [unicodedata.name(chr(cp)) for cp in cps],
        "groups": [GROUPS[g] for g in groups],
        "codepoints": cps,
    }
    return Dataset("emoji", torch.from_numpy(images), labels, [GROUPS[g] for g in used], info)
