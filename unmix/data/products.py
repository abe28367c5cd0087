"""Product-photo triples for free: (busy photo, object mask, the same product on white), generated on the fly.

A "product" is an emoji from Debian's Noto Color Emoji font rendered with its alpha channel; it is scaled so
its longest side covers 45-80% of the frame, placed at a random position and alpha-composited onto a busy
background (a random crop of an offline photo or texture, or procedural noise / stripes). With clutter, 2-4
other emoji are composited behind it first (25-60% of the frame, slightly blurred, possibly cut by the frame);
at level "cut" the product itself may be cut by the frame. The same alpha composited onto white gives the
target, so the three images agree exactly:

    busy  = background * (1 - a) + product * a          white = 1 * (1 - a) + product * a

Every triple is a pure function of (seed, index): item i is drawn from its own torch.Generator seeded from
both, so a batch is the same whatever the order or grouping of the indices, and runs are resumable.

Held out: every 10th product emoji (by position in the font's list) and a fixed set of background photos and
textures (and the procedural "checker" family) are used only with split="test"; split="train" never draws them.
The photo `coffee` (a real cup on a table) is held out so that cleaning it is an honest out-of-sample demo.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from unmix.data.background_photos import folder_backgrounds, offline_backgrounds, read_gimp_pattern, scene_photos
from unmix.errors import UnmixError

LEVELS = ("plain", "clutter", "cut")
SPLITS = ("train", "test")
PRODUCT_FRACTION = (0.45, 0.80)  # longest side of the product, as a fraction of the frame
CLUTTER_FRACTION = (0.25, 0.60)
GLYPH_SIDE = 96  # glyphs are kept at this longest side (premultiplied RGBA), enough for 64 px frames
HELD_OUT_EVERY = 10  # every 10th product emoji is a test product
# photos and textures shipped inside the scikit-image wheel (read from its data folder: never downloaded)


# ---------------------------------------------------------------------------------------------- products (glyphs)

@functools.lru_cache(maxsize=1)
def product_codepoints() -> tuple[int, ...]:
    """Every single-code-point emoji the font draws (the same list as the emoji dataset), in Unicode's order."""
    from unmix.data.emoji import find_font, select

    return tuple(ord(e.bare) for e in select(find_font()))


def split_products(split: str) -> list[int]:
    """Indices into product_codepoints() of a split: test = every HELD_OUT_EVERY-th, train = the rest."""
    n = len(product_codepoints())
    test = split == "test"
    return [i for i in range(n) if (i % HELD_OUT_EVERY == HELD_OUT_EVERY // 2) == test]


@functools.lru_cache(maxsize=1)
def _font():
    from PIL import ImageFont

    from unmix.data.emoji import FONT_SIZE, find_font

    return ImageFont.truetype(find_font(), FONT_SIZE)


@functools.lru_cache(maxsize=None)
def glyph(index: int) -> torch.Tensor:
    """Product `index` as premultiplied RGBA float [4, h, w] in [0, 1], cropped to its alpha's bounding box and
    scaled so the longest side is GLYPH_SIDE (rendered once per process by Pillow at the font's only size, 109)."""
    from PIL import Image, ImageDraw

    from unmix.data.emoji import CANVAS

    canvas = Image.new("RGBA", (CANVAS + 24,) * 2, (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text(((CANVAS + 24) // 2,) * 2, chr(product_codepoints()[index]), font=_font(),
                                embedded_color=True, anchor="mm")
    box = canvas.getchannel("A").getbbox()
    if box is None:
        raise UnmixError(f"emoji U+{product_codepoints()[index]:04X} renders empty with this font")
    rgba = torch.from_numpy(np.asarray(canvas.crop(box), dtype=np.float32) / 255).permute(2, 0, 1)
    rgba = torch.cat([rgba[:3] * rgba[3:], rgba[3:]])  # premultiplied: resizing then never bleeds black edges
    h, w = rgba.shape[1:]
    scale = GLYPH_SIDE / max(h, w)
    return _resize(rgba, max(1, round(h * scale)), max(1, round(w * scale))).clamp(0, 1)


def _resize(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """[C, H, W] -> [C, h, w], antialiased bilinear (area-like when shrinking)."""
    if tuple(img.shape[1:]) == (h, w):
        return img
    return F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]


def _scaled_glyph(index: int, side: int) -> torch.Tensor:
    g = glyph(index)
    h, w = g.shape[1:]
    s = side / max(h, w)
    return _resize(g, max(1, round(h * s)), max(1, round(w * s))).clamp(0, 1)


def paste(canvas: torch.Tensor, alpha: torch.Tensor, rgba: torch.Tensor, top: int, left: int) -> None:
    """Alpha-composite premultiplied `rgba` [4, h, w] over `canvas` [3, H, W] (in place) with its top-left corner
    at (top, left), clipped by the frame; `alpha` [1, H, W] accumulates the pasted coverage the same way."""
    H, W = canvas.shape[1:]
    h, w = rgba.shape[1:]
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + h, H), min(left + w, W)
    if y0 >= y1 or x0 >= x1:
        return
    patch = rgba[:, y0 - top:y1 - top, x0 - left:x1 - left]
    a = patch[3:]
    canvas[:, y0:y1, x0:x1] = canvas[:, y0:y1, x0:x1] * (1 - a) + patch[:3]
    alpha[:, y0:y1, x0:x1] = alpha[:, y0:y1, x0:x1] * (1 - a) + a


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0, n: int = 1) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """An int in [lo, hi] inclusive."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def procedural(kind: str, size: int, g: torch.Generator) -> torch.Tensor:
    """A procedural background [3, size, size] in [0, 1]: "noise" (smooth coloured noise at a random scale),
    "stripes" (two colours at a random angle and period) or "checker" (test only)."""
    c1, c2 = torch.rand(3, generator=g), torch.rand(3, generator=g)
    if kind == "noise":
        k = _randint(g, 2, 12)
        low = torch.randn(3, k, k, generator=g) * 0.25 + (c1 * 0.6 + 0.2)[:, None, None]
        fine = torch.randn(3, size, size, generator=g) * float(_uniform(g, 0.0, 0.08))
        return (F.interpolate(low[None], size=(size, size), mode="bicubic", align_corners=False)[0] + fine).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    angle, period = float(_uniform(g, 0, math.pi)), float(_uniform(g, 3, 16))
    phase = float(_uniform(g, 0, 2 * math.pi))
    if kind == "stripes":
        t = torch.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase)
        w = (t * float(_uniform(g, 1, 6))).clamp(-1, 1) * 0.5 + 0.5
    elif kind == "checker":
        u, v = xx * math.cos(angle) + yy * math.sin(angle), -xx * math.sin(angle) + yy * math.cos(angle)
        w = ((torch.floor(u / period) + torch.floor(v / period)) % 2)
    else:
        raise UnmixError(f"unknown procedural background {kind!r}; valid: noise, stripes, checker")
    return c1[:, None, None] * w + c2[:, None, None] * (1 - w)


def _crop(img: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """A random square crop (side between the short side and a quarter of it, at least `size` when possible),
    resized to size x size, randomly mirrored; tiny images are tiled first."""
    H, W = img.shape[1:]
    if min(H, W) < size:
        img = img.repeat(1, -(-size // H), -(-size // W))
        H, W = img.shape[1:]
    short = min(H, W)
    side = _randint(g, max(min(size, short), short // 4), short)
    top, left = _randint(g, 0, H - side), _randint(g, 0, W - side)
    out = _resize(img[:, top:top + side, left:left + side], size, size)
    return out.flip(2) if bool(torch.rand(1, generator=g) < 0.5) else out


# ---------------------------------------------------------------------------------------------------- triples

@dataclass
class Triples:
    """A batch of triples: busy [N, 3, H, W] and white [N, 3, H, W] in [-1, 1], mask [N, 1, H, W] the product's
    alpha in [0, 1] (binary: mask > 0.5); `product` [N] indices into product_codepoints(), `box` [N, 4] the
    product's (top, left, height, width) in pixels (possibly reaching outside the frame at level "cut")."""

    busy: torch.Tensor
    mask: torch.Tensor
    white: torch.Tensor
    product: torch.Tensor
    box: torch.Tensor

    def __len__(self) -> int:
        return self.busy.shape[0]


class ProductTriples:
    """An endless (length `length`) seeded stream of product triples, usable by the trainer as a Dataset:
    `batch(idx)` returns (target = product on white, cond = busy photo), both [N, 3, size, size] in [-1, 1].

    size: frame side (32 or 64 are the recipes; any side >= 8 works). level: "plain", "clutter" (2-4 emoji
    behind the product) or "cut" (clutter, and the product may be cut by the frame). split: "train" or "test"
    (held-out products and backgrounds). backgrounds: None for the offline set of the split plus procedural
    ones, "scenes" for the split's scene photos (`scene_photos`), or "folder:PATH" for a user's own images (then
    used for both splits); no procedural ones with either.
    """

    def __init__(self, size: int = 64, level: str = "plain", split: str = "train", seed: int = 0,
                 backgrounds: str | None = None, length: int = 1_000_000, procedural_share: float = 0.3):
        if not isinstance(size, int) or size < 8:
            raise UnmixError(f"product triples need size= an int >= 8 (32 or 64 are the recipes), got {size!r}")
        if level not in LEVELS:
            raise UnmixError(f"unknown product level {level!r}; valid: {', '.join(LEVELS)}")
        if split not in SPLITS:
            raise UnmixError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.size, self.level, self.split, self.seed, self.length = size, level, split, int(seed), int(length)
        self.backgrounds = backgrounds or "offline"
        self.products = split_products(split)
        if backgrounds is None:
            self.photos = offline_backgrounds(split)
            self.procedural = ("noise", "stripes") if split == "train" else ("noise", "stripes", "checker")
            self.procedural_share = procedural_share if self.photos else 1.0
        elif backgrounds == "scenes":
            self.photos, self.procedural, self.procedural_share = scene_photos(split), (), 0.0
            if not self.photos:
                raise UnmixError("no scene photos are installed (apt install mate-backgrounds gnome-backgrounds, or "
                                 "pip install scikit-image); or pass backgrounds='folder:PATH'")
        elif isinstance(backgrounds, str) and backgrounds.startswith("folder:"):
            self.photos, self.procedural, self.procedural_share = folder_backgrounds(backgrounds[7:]), (), 0.0
        else:
            raise UnmixError(f"backgrounds= must be None (the offline set), 'scenes' or 'folder:PATH', "
                             f"got {backgrounds!r}")
        self.name = f"product-{level}-{split}"

    # --- the Dataset interface the trainer uses -------------------------------------------------------------
    def __len__(self) -> int:
        return self.length

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    @property
    def cond_shape(self) -> tuple[int, ...]:
        """Shape of one item's condition (the busy photo): what an image-conditioned net's cond_channels come from."""
        return (3, self.size, self.size)

    is_image = True
    labels = None
    captions = None
    class_names: list[str] = []
    num_classes = 0
    info: dict = {}

    def to(self, device) -> "ProductTriples":
        return self  # generated on the CPU per batch; batch() moves to the indices' device

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(product on white, busy photo) for the given item indices, on idx's device."""
        t = self.triples(idx.cpu())
        return t.white.to(idx.device), t.busy.to(idx.device)

    def describe(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "size": len(self), "class_names": [],
                "level": self.level, "split": self.split, "seed": self.seed, "backgrounds": self.backgrounds}

    # --- generation -----------------------------------------------------------------------------------------
    def generator(self, index: int) -> torch.Generator:
        """Item `index`'s own generator: a function of (seed, split, level, index) only."""
        key = (self.seed * 1_000_003 + index) * 7 + LEVELS.index(self.level) * 2 + SPLITS.index(self.split)
        return torch.Generator().manual_seed(key % (2 ** 63))

    def triples(self, idx) -> Triples:
        """The triples of item indices `idx` (ints or a tensor), stacked."""
        items = [self.item(int(i)) for i in torch.as_tensor(idx).reshape(-1)]
        return Triples(*(torch.stack([it[k] for it in items]) for k in range(5)))

    def item(self, index: int) -> tuple[torch.Tensor, ...]:
        """(busy, mask, white, product, box) of one item; see Triples."""
        g, s = self.generator(index), self.size
        bg = self.background(g)
        if self.level != "plain":
            for _ in range(_randint(g, 2, 4)):
                k = self.products[_randint(g, 0, len(self.products) - 1)]
                side = max(2, round(s * float(_uniform(g, *CLUTTER_FRACTION))))
                rgba = _blur(_scaled_glyph(k, side), float(_uniform(g, 0.3, 1.0)))
                h, w = rgba.shape[1:]
                top, left = _randint(g, -h // 2, s - h // 2), _randint(g, -w // 2, s - w // 2)
                paste(bg, torch.zeros(1, s, s), rgba, top, left)
        product = self.products[_randint(g, 0, len(self.products) - 1)]
        rgba = _scaled_glyph(product, max(2, round(s * float(_uniform(g, *PRODUCT_FRACTION)))))
        h, w = rgba.shape[1:]
        if self.level == "cut" and bool(torch.rand(1, generator=g) < 0.5):
            top, left = _randint(g, -h * 2 // 5, s - h * 3 // 5), _randint(g, -w * 2 // 5, s - w * 3 // 5)
        else:
            top, left = _randint(g, 0, s - h), _randint(g, 0, s - w)
        alpha, white = torch.zeros(1, s, s), torch.ones(3, s, s)
        paste(bg, alpha, rgba, top, left)
        paste(white, torch.zeros(1, s, s), rgba, top, left)
        return (bg.clamp(0, 1) * 2 - 1, alpha.clamp(0, 1), white.clamp(0, 1) * 2 - 1, torch.tensor(product),
                torch.tensor([top, left, h, w]))

    def background(self, g: torch.Generator) -> torch.Tensor:
        """One background [3, size, size] in [0, 1] drawn with `g`: a crop of one of the split's photos, or a
        procedural one."""
        if not self.photos or bool(torch.rand(1, generator=g) < self.procedural_share):
            return procedural(self.procedural[_randint(g, 0, len(self.procedural) - 1)], self.size, g)
        return _crop(self.photos[_randint(g, 0, len(self.photos) - 1)][1], self.size, g).clone()


def _blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [C, H, W], grown by 2r pixels each way so premultiplied RGBA fades out at its
    edges; done as two small matrix products (faster than a grouped convolution at these sizes)."""
    r = max(1, math.ceil(2 * sigma))
    _, h, w = img.shape
    return _blur_matrix(h, r, sigma) @ img @ _blur_matrix(w, r, sigma).T


def _blur_matrix(n: int, r: int, sigma: float) -> torch.Tensor:
    """[n + 2r, n]: row i is the normalised Gaussian centred on output pixel i - r."""
    d = torch.arange(n + 2 * r, dtype=torch.float32)[:, None] - r - torch.arange(n, dtype=torch.float32)[None]
    k = torch.exp(-d ** 2 / (2 * sigma ** 2)) * (d.abs() <= r)
    return k / torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2)).sum()


__all__ = ["ProductTriples", "Triples", "LEVELS", "SPLITS", "product_codepoints", "split_products", "glyph",
           "offline_backgrounds", "scene_photos", "folder_backgrounds", "read_gimp_pattern", "procedural", "paste"]
