"""Exact densities of the 2-D toy datasets, as Gaussian mixtures.

Each toy is a curve (or 8 points) blurred by isotropic Gaussian noise, so its density is an integral
of Gaussians along the curve. A midpoint rule with thousands of nodes, spaced far closer than the
noise scale, turns that into a mixture whose log-density is exact to many digits (by Poisson
summation the relative error is about exp(-2 pi^2 (noise std / node spacing)^2); spacings here are
under a third of the noise std), and the mixture is also an exact denoiser. The constants mirror unmix.data.toys; tests check the two agree.
"""
from __future__ import annotations

import math

import torch

from unmix.analytic import GaussianMixture
from unmix.errors import UnmixError

TOYS = ("swissroll", "ring", "moons")
_NODES = 1024
F64 = torch.float64


def _midpoints(n: int) -> torch.Tensor:
    return (torch.arange(n, dtype=F64) + 0.5) / n


def toy_mixture(name: str) -> GaussianMixture:
    """The exact density of a 2-D toy dataset as a GaussianMixture (isotropic components)."""
    if name == "swissroll":  # t ~ U(1.5 pi, 4.5 pi), x = (t cos t, t sin t) / 15 + N(0, 0.02^2)
        t = 1.5 * math.pi * (1 + 2 * _midpoints(_NODES))
        means, std = torch.stack([t * t.cos(), t * t.sin()], 1) / 15, 0.02
    elif name == "ring":  # 8 Gaussians of std 0.06 on a circle of radius 0.8
        angle = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
        means, std = 0.8 * torch.stack([angle.cos(), angle.sin()], 1), 0.06
    elif name == "moons":  # two half circles, noise 0.05, then shifted by (0.5, 0.25) and divided by 1.5
        a = math.pi * _midpoints(_NODES // 4)
        upper = torch.stack([a.cos(), a.sin()], 1)
        lower = torch.stack([1 - a.cos(), 0.5 - a.sin()], 1)
        means = (torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=F64)) / 1.5
        std = 0.05 / 1.5
    else:
        raise UnmixError(f"no exact density for {name!r}; valid: {', '.join(TOYS)}")
    k = means.shape[0]
    return GaussianMixture(torch.full((k,), 1.0 / k, dtype=F64), means, torch.full((k,), std**2, dtype=F64))
