"""The scene model's data (`unmix train --data backgrounds`): crops of scene photos (Debian's desktop wallpapers
where installed: unmix.data.background_photos.scene_photos), no products.

A model of these draws the new backdrop of unmix.apps.product's *scene* job. The product model cannot: it spends its
training on finding products (noise levels centred high, the photo given), and its own backdrops come out as
coloured noise (docs/product_photos.md). Its busy training backgrounds (textures, stripes, procedural noise) are
not scenes either: a first backdrop model trained on them drew multicoloured blotches."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unmix.data.products import ProductTriples


class Backgrounds(ProductTriples):
    """An endless seeded stream of backgrounds [3, size, size] in [-1, 1]: crops of the split's scene photos, or of
    a user's own folder (backgrounds="folder:PATH"), drawn as ProductTriples draws its backgrounds."""

    def __init__(self, size: int = 32, split: str = "train", seed: int = 0, backgrounds: str = "scenes",
                 length: int = 1_000_000):
        super().__init__(max(size, 8), "plain", split, seed, backgrounds=backgrounds, length=length)
        self.side, self.name = size, "backgrounds"

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, self.side, self.side)

    cond_shape = None  # unconditional

    def item_background(self, index: int) -> torch.Tensor:
        """Item `index`'s background [3, side, side] in [-1, 1]."""
        bg = self.background(self.generator(index))
        if bg.shape[-1] != self.side:
            bg = F.interpolate(bg[None], size=(self.side, self.side), mode="area")[0]
        return bg.clamp(0, 1) * 2 - 1

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
        """(backgrounds [N, 3, side, side], None) for the given item indices, on idx's device."""
        return torch.stack([self.item_background(int(i)) for i in idx.cpu()]).to(idx.device), None

    def describe(self) -> dict:
        return {**super().describe(), "shape": list(self.shape), "task": "backgrounds"}


__all__ = ["Backgrounds"]
