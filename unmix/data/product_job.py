"""The trainer's dataset for `unmix train --data product`: product triples (unmix.data.products) as (x0, cond)
pairs for the one image-conditioned model that serves every job of unmix.apps.product."""
from __future__ import annotations

import torch

from unmix.data.grabcut import with_grabcut
from unmix.data.products import ProductTriples


class ProductJob(ProductTriples):
    """The trainer's dataset for the product jobs (`unmix train --data product`): x0 = [alpha, busy photo], four
    channels in [-1, 1] (alpha 0..1 mapped to -1..1), cond = the busy photo and its GrabCut mask (four channels), so
    the net refines a classical coarse mask rather than finding the product from nothing.

    One model serves all three jobs of unmix.apps.product: given the photo as its condition it samples the alpha
    (*clean* composites the photo's own pixels on white through it); with the condition dropped (the NaN row of
    unmix.nets.unet, `cond_dropout` of the training draws) it is a model of (photo, alpha) pairs, so inpainting
    with the product's pixels and alpha known draws a new background around it (*scene*) and outpainting fills a
    border (*square*)."""

    def __init__(self, size: int = 32, level: str = "clutter", split: str = "train", seed: int = 0, **kwargs):
        super().__init__(size, level, split, seed, **kwargs)
        self.name = "product"

    @property
    def shape(self) -> tuple[int, ...]:
        return (4, self.size, self.size)

    @property
    def cond_shape(self) -> tuple[int, ...]:
        """The busy photo and its GrabCut mask (unmix.data.grabcut.with_grabcut)."""
        return (4, self.size, self.size)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """([alpha, busy photo], [busy photo, its GrabCut mask]) for the given item indices, on idx's device."""
        t = self.triples(idx.cpu())
        return torch.cat([t.mask * 2 - 1, t.busy], 1).to(idx.device), with_grabcut(t.busy).to(idx.device)

    def describe(self) -> dict:
        return {**super().describe(), "task": "product", "channels": ["alpha", "red", "green", "blue"]}

    def preview(self, denoiser, n: int = 8, nfe: int = 17, device="cpu") -> torch.Tensor:
        """Rows of (busy photo, its clean on white by the net, the truth) for n held-out triples: the trainer's
        preview picture, [3n, 3, size, size]."""
        from unmix.samplers import sample

        t = ProductTriples(self.size, self.level, "test", seed=self.seed).triples(range(n))
        with torch.no_grad():
            x = sample(denoiser, (n, 4, self.size, self.size), "heun", nfe, seed=0,
                       cond=with_grabcut(t.busy).to(device)).cpu()
        alpha = (x[:, :1].clamp(-1, 1) + 1) / 2
        return torch.stack([t.busy, 1 + alpha * (t.busy - 1), t.white], 1).flatten(0, 1)
