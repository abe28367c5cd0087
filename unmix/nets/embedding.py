"""The conditioning vector every block sees: noise level (and optionally a class label or a prompt's pooled
text vector) as one embedding.

c_noise arrives in the parameterisation's units (ln(sigma)/4 for continuous models, a timestep in
[0, T-1] for discrete ones); `noise_scale` maps it to a range where sinusoidal features with periods
from 2*pi to 2*pi*10^4 all vary, so both conventions train equally well.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from unmix.conditioning import TextCond


def sinusoidal(v: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[N] -> [N, dim] cos/sin features with geometrically spaced frequencies (Transformer positions)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=v.device, dtype=torch.float32) / half)
    args = v.float()[:, None] * freqs[None, :]
    return torch.cat([args.cos(), args.sin()], dim=1)


class ConditionEmbedding(nn.Module):
    """Noise level -> sinusoidal features -> MLP, plus a learned class vector when num_classes > 0, or a
    linear projection of the prompt's pooled vector when text_dim > 0 (Imagen adds the pooled text embedding
    to the timestep embedding the same way; Saharia et al. 2022).

    Class index `num_classes` is the reserved "no label" (classifier-free guidance); cond=None means
    that index for the whole batch. A text model's "no condition" is the null caption's TextCond.
    """

    def __init__(self, base_dim: int, emb_dim: int, num_classes: int = 0, noise_scale: float = 1.0,
                 text_dim: int = 0):
        super().__init__()
        self.base_dim, self.num_classes, self.noise_scale = base_dim, num_classes, noise_scale
        self.mlp = nn.Sequential(nn.Linear(base_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.classes = nn.Embedding(num_classes + 1, emb_dim) if num_classes > 0 else None
        self.text = nn.Linear(text_dim, emb_dim) if text_dim > 0 else None

    def forward(self, c_noise: torch.Tensor, cond: torch.Tensor | TextCond | None) -> torch.Tensor:
        emb = self.mlp(sinusoidal(c_noise * self.noise_scale, self.base_dim).to(self.mlp[0].weight.dtype))
        if self.text is not None:
            emb = emb + self.text(cond.pooled)
        elif self.classes is not None:
            if cond is None:
                cond = torch.full_like(c_noise, self.num_classes, dtype=torch.long)
            cond = torch.as_tensor(cond, device=c_noise.device).long().reshape(-1).expand(c_noise.shape[0])
            emb = emb + self.classes(cond)
        return emb
