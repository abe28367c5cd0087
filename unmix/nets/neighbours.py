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

unmix.analytic.FiniteDataset is the same denoiser in float64 for exact experiments; this one is the net's: float32,
stored in buffers, with the leave-out.

The table (every training item as the net sees it, float16; latents for a latent model) lives in the net's
buffers, so it travels with the checkpoint: a checkpoint of such a net holds its training set.
"""
from __future__ import annotations

import torch
from torch import nn

from unmix.errors import UnmixError

SAME = 1e-4  # mean squared difference under which a stored item counts as the excluded one (float16 storage)


class NeighbourGuess(nn.Module):
    """(x [N, C, H, W], sigma [N]) -> D*(x, sigma) [N, C, H, W] over the stored items; zeros while empty."""

    def __init__(self, channels: int):
        super().__init__()
        self.register_buffer("values", torch.zeros(0, channels, 0, 0, dtype=torch.float16))

    @torch.no_grad()
    def fill(self, values: torch.Tensor) -> None:
        """Store the training items [M, C, H, W]."""
        self.values = values.to(self.values.device, torch.float16)

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
            v = self.values.flatten(1).float()
            logits = -_squared_distances(x.flatten(1).float(), v) / (2 * sigma.float().reshape(-1, 1) ** 2)
            if exclude is not None:
                same = _squared_distances(exclude.flatten(1).float(), v) < SAME * v.shape[1]
                logits = logits.masked_fill(same, float("-inf"))
            w = torch.softmax(logits, dim=1).nan_to_num(0.0)  # a row with every item excluded guesses zeros
            return (w @ v).view_as(x).to(x.dtype)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N, M] squared Euclidean distances between rows, clamped at 0 (the expanded form can dip below)."""
    return (a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)).clamp_min(0)
