"""The training set's ideal denoiser, given to a U-Net as extra input channels (`UNetConfig.neighbours`).

Why: for a finite training set {x_i} the best possible denoiser is known in closed form (Karras et al. 2022,
appendix B.3): the posterior mean under the empirical distribution,

    D*(x, sigma) = sum_i softmax_i(-|x - x_i|^2 / (2 sigma^2)) x_i,

the noise-level-weighted mean of the items nearest the noisy input. At high noise it is exactly what a net
trained for 30 CPU minutes is still learning (which layout, which palette); at low noise it snaps to one
training item. A net that sees D* only has to sharpen it, as retrieval-augmented and instance-conditioned
generators do (Blattmann et al. 2022; Casanova et al. 2021). How much the net may lean on it is set in training:
in a share `neighbours_leave_out` of the rows the item is left out of its own guess (`exclude`), so that the net
must rebuild it from its noisy copy and the other items. At 1 the guess never contains the answer and the net
learns to generalise from neighbours; at 0 it always does, and the net learns to copy the nearest training item
(D* is the exact minimiser of the loss on the training set). Sampling uses the whole table.

With `patch_scale` > 0 the guess is local (Kamb & Ganguli 2025, "An analytic theory of creativity in convolutional
diffusion models"; Niedoba et al. 2025): each pixel is the same softmax-weighted mean, but over the training
pictures' values at that pixel, weighted by how well a P x P patch around it matches (P = patch_scale * sigma
pixels, odd, at least `min_patch`; the whole picture when P reaches its side). Different pixels may follow different
pictures, so the guess combines training patches instead of returning one training picture: at high noise it is
the global guess (layout, palette), at low noise a local denoiser. For speed it looks at each row's `candidates`
globally nearest items only.

unmix.analytic.FiniteDataset is the same denoiser in float64 for exact experiments; this one is the net's: float32,
stored in buffers, with the leave-out.

The table (every training item as the net sees it, float16; latents for a latent model) lives in the net's
buffers, so it travels with the checkpoint: a checkpoint of such a net holds its training set.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unmix.errors import UnmixError

CHUNK = 64  # rows per pass: a local guess holds rows x candidates pictures in memory
SAME = 1e-4  # mean squared difference under which a stored item counts as the excluded one (float16 storage)


class NeighbourGuess(nn.Module):
    """(x [N, C, H, W], sigma [N]) -> D*(x, sigma) [N, C, H, W] over the stored items; zeros while empty."""

    def __init__(self, channels: int, patch_scale: float = 0.0, candidates: int = 64, min_patch: int = 3):
        super().__init__()
        self.patch_scale, self.candidates, self.min_patch = patch_scale, candidates, min_patch
        self.register_buffer("values", torch.zeros(0, channels, 0, 0, dtype=torch.float16))

    @torch.no_grad()
    def fill(self, values: torch.Tensor) -> None:
        """Store the training items [M, C, H, W]."""
        self.values = values.to(self.values.device, torch.float16)

    def _table(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The items in float32 [M, D] and their squared norms, converted once per stored table."""
        key = (self.values.data_ptr(), self.values.device, tuple(self.values.shape))
        if getattr(self, "_cached", (None,))[0] != key:
            v = self.values.flatten(1).float()
            self._cached = (key, v, v.square().sum(1))
        return self._cached[1], self._cached[2]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "values" in state_dict:  # the table's size is the checkpoint's
            self.values = torch.empty_like(state_dict[prefix + "values"], device=self.values.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, sigma: torch.Tensor, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """`exclude` [N, C, H, W]: per row, an item whose stored copy takes no part (training's leave-one-out).
        In float32 even under autocast: the weights are exponentials of squared distances over sigma^2."""
        if not len(self.values) or tuple(self.values.shape[1:]) != tuple(x.shape[1:]):
            if len(self.values):
                raise UnmixError(f"the net's stored training items are {list(self.values.shape[1:])}, "
                                 f"the input is {list(x.shape[1:])}")
            return torch.zeros_like(x)
        with torch.autocast(x.device.type, enabled=False):
            v, norms = self._table()
            sigma = sigma.float().reshape(-1).expand(len(x))
            xf = x.flatten(1).float()
            d = (xf.square().sum(1, keepdim=True) - 2 * xf @ v.T + norms).clamp_min(0)
            if exclude is not None:
                same = _squared_distances(exclude.flatten(1).float(), v) < SAME * v.shape[1]
                d = d.masked_fill(same, float("inf"))
            sides = self.patch_sides(sigma, x.shape[-1])
            out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
            for side in sides.unique().tolist():
                rows = (sides == side).nonzero().flatten()
                for chunk in rows.split(CHUNK):
                    out[chunk] = (self._whole if side == 0 else self._local)(x[chunk].float(), sigma[chunk], d[chunk], side)
            return out.to(x.dtype)

    def patch_sides(self, sigma: torch.Tensor, size: int) -> torch.Tensor:
        """Per row, the side of the matched patches: odd, at least `min_patch`; 0 (whole pictures) when it reaches `size`."""
        if not self.patch_scale:
            return torch.zeros(len(sigma), dtype=torch.long, device=sigma.device)
        side = (self.patch_scale * sigma).round().long().bitwise_or(1).clamp_min(self.min_patch | 1)
        return torch.where(side >= size, 0, side)

    def _whole(self, x, sigma, d, side) -> torch.Tensor:
        w = torch.softmax(-d / (2 * sigma.reshape(-1, 1) ** 2), dim=1).nan_to_num(0.0)  # all excluded: zeros
        return (w @ self._table()[0]).view_as(x)

    def _local(self, x, sigma, d, side) -> torch.Tensor:
        k = min(self.candidates, d.shape[1])
        near, idx = d.topk(k, dim=1, largest=False)
        items = self.values[idx].float()  # [n, k, C, H, W]
        n, _, c, h, w = items.shape
        per_pixel = (x[:, None] - items).square().sum(2).reshape(n * k, 1, h, w)
        pad = side // 2  # a P x P window sum, zero outside the picture, as two 1-D passes
        window = F.avg_pool2d(F.avg_pool2d(per_pixel, (side, 1), 1, (pad, 0)), (1, side), 1, (0, pad)) * side ** 2
        logits = -window.view(n, k, h, w) / (2 * sigma.reshape(-1, 1, 1, 1) ** 2)
        logits = logits.masked_fill(near.isinf()[:, :, None, None], float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0)
        return (weights[:, :, None] * items).sum(1)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, M] squared Euclidean distances between rows, clamped at 0 (the expanded form can dip below)."""
    return (a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)).clamp_min(0)
