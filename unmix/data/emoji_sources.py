"""Where the five emoji styles' artwork lives, how each is drawn, and the one picture convention they share.

Sources (each installed once by `unmix data install emoji-styles`, see unmix.data.install; the font by Debian):
  noto        Noto Color Emoji, Debian `fonts-noto-color-emoji` (SIL OFL 1.1), drawn by unmix.data.emoji's font reader
  twemoji     npm `emoji-datasource-twitter` 16.0.0, `img/twitter/64/<hex>.png` (graphics CC BY 4.0, Twitter)
  openmoji    npm `openmoji` 17.0.0, `color/svg/<HEX>.svg` (CC BY-SA 4.0)
  fluent      npm `fluentui-emoji` 1.3.0, `icons/modern/<slug>.svg` (MIT, Microsoft's Fluent Emoji)
  fluent-flat the same package's `icons/flat/<slug>.svg`
Versions are pinned: the identities, the pictures and so the composition split must be the same on every machine.

SVGs are rasterised by `rsvg-convert` (Debian `librsvg2-bin`) into a 128x128 box, aspect kept: it draws the Fluent
files' gradients and blur filters, it is one apt package beside the font (no wheel with its own renderer to pin),
and at 10-25 ms a file two threads, each running it, draw the 4,914 SVGs in about two minutes on two cores, once:
the pictures are cached.

The picture convention (outside evaluators use the same): the artwork alpha-composited on white, the bounding box of
its pixels with alpha > 0 centred on a square canvas, scaled (aspect kept) so that its longer side is 90% of the
side; 64 px by Lanczos resampling straight from the artwork, 32 px by averaging 2x2 blocks of the 64 px picture.
"""
from __future__ import annotations

import io
import math
import re
import shutil
import subprocess
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unmix.data.emoji import CANVAS, FONT_SIZE, find_font
from unmix.errors import UnmixError
from unmix.store.files import cache_dir

INSTALL = "unmix data install emoji-styles"
RSVG_INSTALL = "sudo apt-get install librsvg2-bin"
FILL = 0.9  # the artwork's longer side over the canvas side
SIDE = 64  # the side pictures are drawn at; 32 px is derived from it
SVG_BOX = 128  # SVGs are rasterised into this box before the convention is applied


@dataclass(frozen=True)
class Package:
    """An npm package holding some styles' artwork, unpacked under the cache as `<name>-<version>/`."""

    name: str
    version: str
    keep: tuple[str, ...]  # folders (and files) inside the package that are extracted; the rest is skipped

    @property
    def folder(self) -> Path:
        return cache_dir() / "emoji-styles" / f"{self.name}-{self.version}"


PACKAGES = {
    "twemoji": Package("emoji-datasource-twitter", "16.0.0", ("img/twitter/64/", "LICENSE", "README.md")),
    "openmoji": Package("openmoji", "17.0.0", ("color/svg/", "LICENSE.txt")),
    "fluent": Package("fluentui-emoji", "1.3.0", ("icons/modern/", "icons/flat/", "LICENSE")),
}


@dataclass(frozen=True)
class Style:
    id: str  # the split rule's spelling
    display: str  # as captions and class names write it
    package: str | None  # key of PACKAGES (None: the Debian font)
    path: str  # folder of the artwork inside the package


STYLES = {s.id: s for s in (
    Style("noto", "Noto", None, ""),
    Style("twemoji", "Twemoji", "twemoji", "img/twitter/64"),
    Style("openmoji", "OpenMoji", "openmoji", "color/svg"),
    Style("fluent", "Fluent", "fluent", "icons/modern"),
    Style("fluent-flat", "Fluent flat", "fluent", "icons/flat"),
)}


def slug(name: str) -> str:
    """A CLDR name as Fluent's files spell it: accents dropped, lower case, apostrophes removed, other runs of
    non-alphanumerics to '-' ("piñata" -> "pinata", "woman’s hat" -> "womans-hat")."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c)).lower()
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"['’]", "", plain)).strip("-")


def hex_key(name: str) -> str:
    """A file's hex stem as a lookup key: upper case, '-' or ' ' separated, U+FE0F dropped (the packages keep or
    drop it inconsistently)."""
    return " ".join(c for c in re.split(r"[- _]", name.upper()) if c and c != "FE0F")


def artwork_folder(style: str) -> Path:
    """The installed folder of a style's files; one line naming the install command when it is missing."""
    s = STYLES[style]
    folder = PACKAGES[s.package].folder / s.path
    if not folder.is_dir():
        raise UnmixError(f"the {s.display} emoji artwork is not installed (no {folder}); install the emoji styles "
                         f"with `{INSTALL}`")
    return folder


def check_installed(styles) -> None:
    """Raise the one-line UnmixError of the first missing font, package or rasteriser the styles need."""
    for style in styles:
        if style == "noto":
            find_font()
        else:
            artwork_folder(style)
    if any(s not in ("noto", "twemoji") for s in styles):
        rsvg()


def source_version(style: str) -> str:
    """What the pictures of a style are drawn from, for cache keys: the package, or the font file's size and time."""
    if style == "noto":
        font = find_font()
        stat = Path(font).stat()
        return f"{font}:{stat.st_size}:{stat.st_mtime_ns}"
    artwork_folder(style)
    p = PACKAGES[STYLES[style].package]
    return f"{p.name}@{p.version}:{rsvg_version() if style != 'twemoji' else 'png'}"


def find_artwork(style: str, emoji: list) -> dict[str, str]:
    """{codepoints: what to draw} for the emoji (unmix.data.emoji.Emoji rows) this style has artwork for: a file
    path, or for Noto the text the font draws. Hex file names match ignoring U+FE0F; Fluent's by name slug, or
    `<slug>-default.svg` for emoji that come in skin tones."""
    if style == "noto":
        from unmix.data.emoji import select

        drawn = {e.text for e in select(find_font(), sequences=True)}
        return {codepoints(e): e.bare if len(e.bare) == 1 else e.text for e in emoji if e.text in drawn}
    folder = artwork_folder(style)
    files = {f.name: f for f in folder.iterdir()}
    if STYLES[style].package == "fluent":
        found = {codepoints(e): files.get(f"{slug(e.name)}.svg") or files.get(f"{slug(e.name)}-default.svg")
                 for e in emoji}
        return {k: str(v) for k, v in found.items() if v is not None}
    by_hex = {hex_key(f.stem): f for f in files.values()}
    found = {codepoints(e): by_hex.get(hex_key(codepoints(e))) for e in emoji}
    return {k: str(v) for k, v in found.items() if v is not None}


def codepoints(e) -> str:
    """An emoji's code points exactly as emoji-test.txt's first column writes them ("1F34E", "2764 FE0F")."""
    return " ".join(f"{ord(c):04X}" for c in e.text)


def rsvg() -> str:
    path = shutil.which("rsvg-convert")
    if path is None:
        raise UnmixError(f"rsvg-convert (the SVG rasteriser of the emoji styles) is not installed; install it with "
                         f"`{RSVG_INSTALL}`")
    return path


def rsvg_version() -> str:
    return subprocess.run([rsvg(), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def draw(style: str, source: str):
    """The artwork as an RGBA PIL image: an SVG rasterised into the 128 px box, a PNG as it is, a Noto glyph."""
    from PIL import Image, ImageDraw, ImageFont

    if style == "noto":
        font = ImageFont.truetype(find_font(), FONT_SIZE)
        canvas = Image.new("RGBA", (CANVAS + 24,) * 2, (255, 255, 255, 0))  # room for glyphs wider than the em
        ImageDraw.Draw(canvas).text((canvas.width // 2,) * 2, source, font=font, embedded_color=True, anchor="mm")
        return canvas
    if source.endswith(".svg"):
        out = subprocess.run([rsvg(), "-w", str(SVG_BOX), "-h", str(SVG_BOX), "-a", "-f", "png", source],
                             capture_output=True, check=False)
        if out.returncode != 0:
            raise UnmixError(f"rsvg-convert could not draw {source}: {out.stderr.decode(errors='replace').strip()}")
        return Image.open(io.BytesIO(out.stdout)).convert("RGBA")
    with Image.open(source) as im:
        return im.convert("RGBA")


def picture(rgba, side: int = SIDE) -> np.ndarray:
    """uint8 [3, side, side]: the picture convention applied to RGBA artwork (see the module docstring)."""
    from PIL import Image, ImageOps

    alpha = np.asarray(rgba.getchannel("A"))
    ys, xs = np.nonzero(alpha)
    if len(xs) == 0:
        raise UnmixError("the emoji artwork is empty (fully transparent)")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    white.alpha_composite(rgba)
    span = max(xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) / FILL  # the canvas side, in artwork pixels
    pad = math.ceil(span)  # the canvas may reach past the artwork's edges: white there
    rgb = ImageOps.expand(white.convert("RGB"), border=pad, fill=(255, 255, 255))
    cx, cy = (xs.min() + xs.max() + 1) / 2 + pad, (ys.min() + ys.max() + 1) / 2 + pad
    box = (cx - span / 2, cy - span / 2, cx + span / 2, cy + span / 2)
    return np.asarray(rgb.resize((side, side), Image.LANCZOS, box=box)).transpose(2, 0, 1).copy()


def halve(images: np.ndarray) -> np.ndarray:
    """uint8 [N, C, H/2, W/2]: the mean of each 2x2 block (area downsampling), rounded half up."""
    x = images.astype(np.uint16)
    rows = x[:, :, 0::2] + x[:, :, 1::2]
    return ((rows[..., 0::2] + rows[..., 1::2] + 2) // 4).astype(np.uint8)
