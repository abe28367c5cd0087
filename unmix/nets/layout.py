"""A text net's first guess of the picture, E[x0 | prompt], given to the U-Net as extra input channels.

Why: cross-attention learns which emoji a prompt names only slowly (after 45 CPU minutes a text U-Net drew
the right emoji for 6% of prompts, top-5). Yet at high noise the ideal denoiser of a prompt is simply the mean
picture of that prompt. Two estimates of it:

- `TextLayout` (layout="mlp"): a regression from the pooled vector to an image, trained directly on the
  training captions (`unmix.training.objectives.TextDiffusionObjective`). Blurred: after 45 minutes its guesses alone
  ranked the named emoji top-5 for 56% of the evaluation prompts.
- `RetrievalLayout` (layout="retrieval", the default): kernel regression over the training set itself, as in
  retrieval-augmented diffusion (Blattmann et al. 2022; Sheynin et al. 2022): the prompt's pooled vector is
  compared with every training caption's, and the guess is the softmax(cosine / temperature)-weighted mean of
  their pictures. Nothing to train; a prompt that is a training caption gets that picture (top-5 94% alone),
  a keyword shared by many ("fruit") their mean, the null caption the mean of the whole set. The table (the
  captions' vectors and the pictures at the layout side, float16) lives in the net's buffers, so it travels
  with the checkpoint (for emoji 8 MB): a checkpoint of such a net holds its training pictures at 32 px.

The U-Net takes the guess detached; it then only has to sharpen and vary it, and classifier-free guidance
contrasts the prompt's guess with the mean's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("mlp", "retrieval")


def _resized(guess: torch.Tensor, shape: tuple[int, int] | None) -> torch.Tensor:
    if shape is None or tuple(shape) == tuple(guess.shape[2:]):
        return guess
    return F.interpolate(guess, size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)


class TextLayout(nn.Module):
    """pooled [N, text_dim] -> [N, channels, size, size], resized to the requested (height, width)."""

    def __init__(self, text_dim: int, channels: int, size: int, hidden: int):
        super().__init__()
        self.channels, self.size = channels, size
        self.mlp = nn.Sequential(nn.Linear(text_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, channels * size * size))

    def forward(self, pooled: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        guess = self.mlp(pooled.to(self.mlp[0].weight.dtype)).view(-1, self.channels, self.size, self.size)
        return _resized(guess, shape)


class RetrievalLayout(nn.Module):
    """pooled [N, text_dim] -> the softmax-weighted mean of the stored pictures, [N, channels, size, size].

    Buffers: `keys` [K, text_dim] unit caption vectors, `owner` [K] the picture of each key, `values`
    [M, channels, size, size]. Empty until `fill` (a fresh net guesses zeros); their sizes come from the
    state dict when a checkpoint is loaded."""

    def __init__(self, text_dim: int, channels: int, size: int, temperature: float):
        super().__init__()
        self.channels, self.size, self.temperature = channels, size, temperature
        self.register_buffer("keys", torch.zeros(0, text_dim, dtype=torch.float16))
        self.register_buffer("owner", torch.zeros(0, dtype=torch.long))
        self.register_buffer("values", torch.zeros(0, channels, size, size, dtype=torch.float16))

    @torch.no_grad()
    def fill(self, keys: torch.Tensor, owner: torch.Tensor, values: torch.Tensor) -> None:
        """Store caption vectors [K, D], their pictures' indices [K] and the pictures [M, C, H, W] (area-resized)."""
        if values.shape[2:] != (self.size, self.size):
            values = F.interpolate(values.float(), size=(self.size, self.size), mode="area")
        device = self.keys.device
        self.keys = F.normalize(keys.float(), dim=1).to(device, torch.float16)
        self.owner = owner.to(device, torch.long)
        self.values = values.to(device, torch.float16)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("keys", "owner", "values"):  # the table's size is the checkpoint's
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.keys.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """[N, M]: how much each stored picture counts for each prompt (rows sum to 1), in float32 even under
        autocast (a bf16 cosine divided by the temperature would be off by ~0.3)."""
        with torch.autocast(pooled.device.type, enabled=False):
            sim = F.normalize(pooled.float(), dim=1) @ self.keys.float().T
            w = torch.softmax(sim / self.temperature, dim=1)
            return w.new_zeros(len(pooled), len(self.values)).index_add_(1, self.owner, w)

    def forward(self, pooled: torch.Tensor, shape: tuple[int, int] | None = None) -> torch.Tensor:
        if not len(self.keys):
            guess = pooled.new_zeros(len(pooled), self.channels, self.size, self.size)
        else:
            guess = (self.weights(pooled) @ self.values.flatten(1).float()).view(-1, self.channels, self.size,
                                                                                  self.size)
        return _resized(guess, shape)
