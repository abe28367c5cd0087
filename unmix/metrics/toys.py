"""Exact densities of the 2-D toy datasets, as Gaussian mixtures built from their one definition.

Each toy (unmix.data.toys.Toy) is a curve (or 8 points) blurred by isotropic Gaussian noise, so its
density is an integral of Gaussians along the curve. A midpoint rule with thousands of nodes, spaced far
closer than the noise scale, turns that into a mixture whose log-density is exact to many digits (by
Poisson summation the relative error is about exp(-2 pi^2 (noise std / node spacing)^2); spacings here
are under half the noise std), and the mixture is also an exact denoiser. The nodes go through the same
`curve` and `place` that `load_toy` samples from, in float64.
"""
from __future__ import annotations

import math

import torch

from unmix.analytic import GaussianMixture
from unmix.data.toys import TOYS as _DEFINITIONS
from unmix.data.toys import get_toy
from unmix.errors import UnmixError

TOYS = tuple(_DEFINITIONS)
F64 = torch.float64


def toy_mixture(name: str, noise: float | None = None) -> GaussianMixture:
    """The exact density of a 2-D toy dataset as a GaussianMixture (isotropic, equal-weight components).

    `noise` is the blur std as in unmix.data.toys.load_toy (default: the toy's own); thinner blurs get
    proportionally more nodes, so the node spacing stays under half the std and the mixture stays exact."""
    if name not in TOYS:
        raise UnmixError(f"no exact density for {name!r}; valid: {', '.join(TOYS)}")
    toy = get_toy(name)
    std = toy.blur_std(noise)
    nodes = toy.nodes * max(1, math.ceil(toy.noise / std)) if toy.continuous else 1
    k = torch.arange(toy.branches, dtype=F64).repeat_interleave(nodes)
    u = ((torch.arange(nodes, dtype=F64) + 0.5) / nodes).repeat(toy.branches)  # midpoints of each branch
    means = toy.place(toy.curve(k, u))
    n = means.shape[0]
    return GaussianMixture(torch.full((n,), 1.0 / n, dtype=F64), means, torch.full((n,), std**2, dtype=F64))
