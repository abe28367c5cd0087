"""2-D toy distributions for the MLP: the swiss roll of Sohl-Dickstein et al. 2015, a ring of 8
Gaussians, and two moons; each 8,192 points from a fixed seed, scaled to about [-1, 1].

Each toy is a curve (or 8 points) blurred by isotropic Gaussian noise; `noise` sets that blur's std
(the roll's thickness), so likelihood benchmarks can ask how thin a roll a model resolves.
"""
from __future__ import annotations

import math

import torch

from unmix.data import Dataset
from unmix.errors import UnmixError

N_POINTS = 8192
NOISE = {"swissroll": 0.02, "ring": 0.06, "moons": 0.05 / 1.5}  # default blur std, in each toy's final units


def load_toy(name: str, n: int = N_POINTS, seed: int = 0, noise: float | None = None) -> Dataset:
    """n points of toy `name` from `seed`; `noise` (default NOISE[name]) is the Gaussian blur's std."""
    if name not in NOISE:
        raise ValueError(name)
    s = NOISE[name] if noise is None else float(noise)
    if not s > 0:
        raise UnmixError(f"toy noise must be positive, got {noise}")
    g = torch.Generator().manual_seed(seed)
    if name == "swissroll":
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=g))
        x = torch.stack([t * t.cos(), t * t.sin()], 1) / 15 + s * torch.randn(n, 2, generator=g)
        return Dataset("swissroll", x)
    if name == "ring":
        k = torch.randint(0, 8, (n,), generator=g)
        angle = k * (2 * math.pi / 8)
        x = 0.8 * torch.stack([angle.cos(), angle.sin()], 1) + s * torch.randn(n, 2, generator=g)
        return Dataset("ring", x, k, [f"{45 * i} deg" for i in range(8)])
    k = torch.randint(0, 2, (n,), generator=g)  # moons
    angle = math.pi * torch.rand(n, generator=g)
    upper = torch.stack([angle.cos(), angle.sin()], 1)
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], 1)
    x = torch.where(k[:, None] == 0, upper, lower) + 1.5 * s * torch.randn(n, 2, generator=g)
    x = (x - torch.tensor([0.5, 0.25])) / 1.5
    return Dataset("moons", x, k, ["upper", "lower"])
