"""2-D toy distributions for the MLP: the swiss roll of Sohl-Dickstein et al. 2015, a ring of 8
Gaussians, and two moons; each 8,192 points from a fixed seed, scaled to about [-1, 1].

Each toy is defined once, as a `Toy`: points on one or more curves ("branches", picked uniformly; a
ring's branches are single points), at a uniform position along the curve, blurred by isotropic
Gaussian noise, then shifted and scaled into place. `load_toy` draws from that definition, and
unmix.metrics.toys turns the same definition into the toy's exact density, so the two cannot drift
apart. `noise` sets the blur's std (the roll's thickness), so likelihood benchmarks can ask how thin
a roll a model resolves.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unmix.data.dataset import Dataset
from unmix.errors import UnmixError

N_POINTS = 8192


@dataclass(frozen=True)
class Toy:
    """A blurred curve: x = (curve(k, u) + scale * noise * z - offset) / scale, k ~ U{0..branches-1},
    u ~ U(0, 1) (not drawn when the branches are points), z ~ N(0, I).

    `noise` is the default blur std in the final coordinates. `nodes` is how many midpoint-rule nodes per
    branch the exact density needs at that noise (spacing well under the blur). `class_names`, when given,
    name the branches, which then label the points.
    """

    name: str
    curve: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (k [N] float, u [N]) -> points [N, 2]
    noise: float
    branches: int = 1
    continuous: bool = True
    nodes: int = 1
    scale: float = 1.0
    offset: tuple[float, float] = (0.0, 0.0)
    class_names: tuple[str, ...] = ()

    def blur_std(self, noise: float | None = None) -> float:
        """The blur std to use: `noise`, or the toy's default; it must be positive."""
        std = self.noise if noise is None else float(noise)
        if not std > 0:
            raise UnmixError(f"toy noise must be positive, got {noise}")
        return std

    def place(self, points: torch.Tensor) -> torch.Tensor:
        """The curve's own coordinates to the final ones (about [-1, 1])."""
        return (points - torch.tensor(self.offset, dtype=points.dtype)) / self.scale

    def draw(self, n: int, generator: torch.Generator, noise: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """n points [n, 2] (float32) and their branches [n] (long); the draws are k, then u, then z."""
        std = self.blur_std(noise)
        k = torch.zeros(n, dtype=torch.long)
        if self.branches > 1:
            k = torch.randint(0, self.branches, (n,), generator=generator)
        u = torch.rand(n, generator=generator) if self.continuous else torch.zeros(n)
        blurred = self.curve(k.float(), u) + self.scale * std * torch.randn(n, 2, generator=generator)
        return self.place(blurred), k


def _swissroll(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """t in [1.5 pi, 4.5 pi): (t cos t, t sin t) / 15."""
    t = 1.5 * math.pi * (1 + 2 * u)
    return torch.stack([t * t.cos(), t * t.sin()], 1) / 15


def _ring(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """8 points on a circle of radius 0.8, the first on the x axis."""
    angle = k * (2 * math.pi / 8)
    return 0.8 * torch.stack([angle.cos(), angle.sin()], 1)


def _moons(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """scikit-learn's two moons: the upper half circle, and the lower one shifted by (1, 0.5)."""
    angle = math.pi * u
    upper = torch.stack([angle.cos(), angle.sin()], 1)
    lower = torch.stack([1 - angle.cos(), 0.5 - angle.sin()], 1)
    return torch.where(k[:, None] == 0, upper, lower)


TOYS = {
    "swissroll": Toy("swissroll", _swissroll, noise=0.02, nodes=1024),
    "ring": Toy("ring", _ring, noise=0.06, branches=8, continuous=False,
                class_names=tuple(f"{45 * i} deg" for i in range(8))),
    "moons": Toy("moons", _moons, noise=0.05 / 1.5, branches=2, nodes=256, scale=1.5, offset=(0.5, 0.25),
                 class_names=("upper", "lower")),
}
NOISE = {name: toy.noise for name, toy in TOYS.items()}  # default blur std, in each toy's final units


def get_toy(name: str) -> Toy:
    if name not in TOYS:
        raise UnmixError(f"unknown toy {name!r}; valid: {', '.join(TOYS)}")
    return TOYS[name]


def load_toy(name: str, n: int = N_POINTS, seed: int = 0, noise: float | None = None) -> Dataset:
    """n points of toy `name` from `seed`; `noise` (default NOISE[name]) is the Gaussian blur's std."""
    toy = get_toy(name)
    x, k = toy.draw(n, torch.Generator().manual_seed(seed), noise)
    if not toy.class_names:
        return Dataset(name, x)
    return Dataset(name, x, k, list(toy.class_names))
