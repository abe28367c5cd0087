"""2-D toy distributions for the MLP: the swiss roll of Sohl-Dickstein et al. 2015, a ring of 8
Gaussians, and two moons; each 8,192 points from a fixed seed, scaled to about [-1, 1]."""
from __future__ import annotations

import math

import torch

from unmix.data import Dataset

N_POINTS = 8192


def load_toy(name: str, n: int = N_POINTS, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    if name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
        x = torch.stack([t * t.cos(), t * t.sin()], 1) / 15 + 0.02 * torch.randn(n, 2, generator=g)
        return Dataset("swissroll", x)
    if name == "ring":
        k = torch.randint(0, 8, (n,), generator=g)
        angle = k * (2 * math.pi / 8)
        x = 0.8 * torch.stack([angle.cos(), angle.sin()], 1) + 0.06 * torch.randn(n, 2, generator=g)
        return Dataset("ring", x, k, [f"{45 * i} deg" for i in range(8)])
    if name == "moons":
        k = torch.randint(0, 2, (n,), generator=g)
        angle = math.pi * torch.rand(n, generator=g)
        upper = torch.stack([angle.cos(), angle.sin()], 1)
        lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], 1)
        x = torch.where(k[:, None] == 0, upper, lower) + 0.05 * torch.randn(n, 2, generator=g)
        x = (x - torch.tensor([0.5, 0.25])) / 1.5
        return Dataset("moons", x, k, ["upper", "lower"])
    raise ValueError(name)
