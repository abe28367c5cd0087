"""Exact densities of the 2-D toy datasets, as Gaussian mixtures.

Each toy is a curve (or 8 points) blurred by isotropic Gaussian noise, so its density is an integral
of Gaussians along the curve. A midpoint rule with thousands of nodes, spaced far closer than the
noise scale, turns that into a mixture whose log-density is exact to many digits (by Poisson
summation the relative error is about exp(-2 pi^2 (noise std / node spacing)^2); spacings here are
under half the noise std), and the mixture is also an exact denoiser. The curves mirror unmix.data.toys
(noise defaults are shared from there); tests check the two agree.
"""
from __future__ import annotations

import math

import torch

from unmix.analytic import GaussianMixture
from unmix.data.toys import NOISE
from unmix.errors import UnmixError

TOYS = ("swissroll", "ring", "moons")
_NODES = 1024
F64 = torch.float64


def _midpoints(n: int) -> torch.Tensor:
    return (torch.arange(n, dtype=F64) + 0.5) / n


def toy_mixture(name: str, noise: float | None = None) -> GaussianMixture:
    """The exact density of a 2-D toy dataset as a GaussianMixture (isotropic components).

    `noise` is the blur std as in unmix.data.toys.load_toy (default NOISE[name]); thinner blurs get
    proportionally more nodes, so the node spacing stays under half the std and the mixture stays exact."""
    if name not in TOYS:
        raise UnmixError(f"no exact density for {name!r}; valid: {', '.join(TOYS)}")
    std = NOISE[name] if noise is None else float(noise)
    if not std > 0:
        raise UnmixError(f"toy noise must be positive, got {noise}")
    nodes = _NODES * max(1, math.ceil(NOISE[name] / std))
    if name == "swissroll":  # t ~ U(1.5 pi, 4.5 pi), x = (t cos t, t sin t) / 15 + N(0, std^2)
        t = 1.5 * math.pi * (1 + 2 * _midpoints(nodes))
        means = torch.stack([t * t.cos(), t * t.sin()], 1) / 15
    elif name == "ring":  # 8 Gaussians on a circle of radius 0.8
        angle = torch.arange(8, dtype=F64) * (2 * math.pi / 8)
        means = 0.8 * torch.stack([angle.cos(), angle.sin()], 1)
    else:  # moons: two half circles, shifted by (0.5, 0.25) and divided by 1.5, then blurred
        a = math.pi * _midpoints(nodes // 4)
        upper = torch.stack([a.cos(), a.sin()], 1)
        lower = torch.stack([1 - a.cos(), 0.5 - a.sin()], 1)
        means = (torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=F64)) / 1.5
    k = means.shape[0]
    return GaussianMixture(torch.full((k,), 1.0 / k, dtype=F64), means, torch.full((k,), std**2, dtype=F64))
