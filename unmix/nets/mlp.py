"""A residual MLP for low-dimensional data (the 2-D toys), with the same net(x, c_noise, cond) call as the U-Net."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unmix.errors import UnmixError
from unmix.nets.embedding import ConditionEmbedding


@dataclass
class MLPConfig:
    dim: int = 2
    hidden: int = 256
    depth: int = 4  # residual blocks
    dropout: float = 0.0
    num_classes: int = 0
    noise_scale: float = 1.0

    def __post_init__(self):
        if self.dim < 1 or self.hidden < 1 or self.depth < 1:
            raise UnmixError("MLP needs dim, hidden and depth >= 1")


class _Block(nn.Module):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        self.emb, self.drop = nn.Linear(hidden, 2 * hidden), nn.Dropout(dropout)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.emb(F.silu(emb)).chunk(2, dim=1)
        z = F.silu(self.fc1(self.norm(h)) * (1 + scale) + shift)
        return h + self.fc2(self.drop(z))


class MLP(nn.Module):
    """net(x_in [N, dim], c_noise [N], cond [N] | None) -> [N, dim]."""

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = cfg = config
        self.embed = ConditionEmbedding(cfg.hidden, cfg.hidden, cfg.num_classes, cfg.noise_scale)
        self.inp = nn.Linear(cfg.dim, cfg.hidden)
        self.blocks = nn.ModuleList(_Block(cfg.hidden, cfg.dropout) for _ in range(cfg.depth))
        self.out = nn.Sequential(nn.LayerNorm(cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, cfg.dim))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.config.dim:
            raise UnmixError(f"MLP input must be [N, {self.config.dim}], got {list(x.shape)}")
        emb = self.embed(c_noise, cond)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
