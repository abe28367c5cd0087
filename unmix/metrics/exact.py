"""Distances that need no learned features: for low-dimensional data or known densities.

sliced_w2: the sliced Wasserstein-2 distance, averaged over fixed random directions (for equal-size
sets the 1-D W2 on each direction is exact: sort both projections and compare).
log_density_gap: how far the mean exact log-density of generated samples is from that of true samples.
mode_weight_tv: how far the share of samples in each component of a known mixture is from the mixture's weights
(sliced W2 barely sees mode weights in many dimensions; this does).
"""
from __future__ import annotations

import torch

from unmix.errors import UnmixError


def fixed_directions(dim: int, n: int = 256, seed: int = 0) -> torch.Tensor:
    """n unit vectors in R^dim, the same for every call with the same seed."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, dim, generator=g, dtype=torch.float64)
    return d / d.norm(dim=1, keepdim=True)


def sliced_w2(a: torch.Tensor, b: torch.Tensor, n_directions: int = 256, seed: int = 0) -> float:
    """Sliced W2 between two equal-size sample sets [N, ...]: sqrt of the mean over directions of W2^2."""
    a = a.reshape(a.shape[0], -1).double()
    b = b.reshape(b.shape[0], -1).double()
    if a.shape != b.shape:
        raise UnmixError(f"sliced W2 needs two sets of equal shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise UnmixError("sliced W2 needs at least 2 samples per set")
    dirs = fixed_directions(a.shape[1], n_directions, seed)
    pa, _ = (dirs @ a.T).sort(1)  # [directions, N]: sorting contiguous rows is ~20x faster than columns
    pb, _ = (dirs @ b.T).sort(1)
    return float(((pa - pb) ** 2).mean().sqrt())


def log_density_gap(log_prob, samples: torch.Tensor, reference: torch.Tensor) -> float:
    """mean log p(reference) - mean log p(samples), in nats (> 0: samples sit in less likely places)."""
    return float(log_prob(reference).mean() - log_prob(samples).mean())


def mode_weight_tv(mixture, x: torch.Tensor) -> float:
    """Total variation between the mixture's weights and the frequencies of each sample's most responsible
    component at sigma = 0, argmax_k log w_k + log N(x; mu_k, diag v_k), for a unmix.analytic.GaussianMixture."""
    x = x.reshape(x.shape[0], -1).double()
    v = mixture.variances if mixture.variances.ndim == 2 else mixture.variances[:, None].expand_as(mixture.means)
    inv = 1 / v
    d2 = (x * x) @ inv.T - 2 * x @ (mixture.means * inv).T + (mixture.means**2 * inv).sum(1)  # [N, K] Mahalanobis
    scores = mixture.weights.log() - 0.5 * (d2 + v.log().sum(1))
    freq = torch.bincount(scores.argmax(1), minlength=len(mixture.weights)).double() / x.shape[0]
    return 0.5 * float((freq - mixture.weights).abs().sum())
