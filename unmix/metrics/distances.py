"""Distances between two sets of feature vectors [N, d]: Fréchet distance, unbiased KID, precision/recall.

All three are computed in float64 from features alone, so they apply to any feature space.

- Fréchet distance (Heusel et al. 2017): ||mu_a - mu_b||^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2)). The trace of
  the matrix square root is taken as the sum of square roots of the eigenvalues of C_a^(1/2) C_b C_a^(1/2),
  a symmetric PSD matrix with the same spectrum as C_a C_b: no complex parts to discard.
- KID (Binkowski et al. 2018): the unbiased estimator of MMD^2 with the cubic polynomial kernel
  k(x, y) = (x.y / d + 1)^3, over all pairs.
- Precision / recall (Kynkäänniemi et al. 2019): a set's manifold is the union of balls around its points
  with radius the distance to the k-th nearest neighbour in the same set; precision is the share of
  generated points inside the real manifold, recall the share of real points inside the generated one.
"""
from __future__ import annotations

import torch

from unmix.errors import UnmixError

F64 = torch.float64


def _as_features(x, name: str) -> torch.Tensor:
    x = torch.as_tensor(x).to(F64)
    if x.ndim != 2:
        raise UnmixError(f"{name} features must be [N, d], got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise UnmixError(f"{name} features contain NaN or infinite values")
    return x


def _need(n: int, minimum: int, metric: str, why: str) -> None:
    if n < minimum:
        raise UnmixError(f"{metric} needs at least {minimum} samples ({why}), got {n}")


def mean_cov(features) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [d] and unbiased covariance [d, d] of a feature set, in float64."""
    f = _as_features(features, "")
    _need(f.shape[0], 2, "a covariance", "at least two points")
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_distance_from_stats(mu_a, cov_a, mu_b, cov_b) -> float:
    """Fréchet distance between N(mu_a, cov_a) and N(mu_b, cov_b)."""
    mu_a, mu_b, cov_a, cov_b = (torch.as_tensor(t, dtype=F64) for t in (mu_a, mu_b, cov_a, cov_b))
    evals, evecs = torch.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (evecs * evals.clamp(min=0).sqrt()) @ evecs.T
    middle = root_a @ cov_b @ root_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    fd = ((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_sqrt
    return max(float(fd), 0.0)


def fd_min_samples(dim: int) -> int:
    """A full-rank covariance in d dimensions needs d + 1 points; fewer make FD meaningless."""
    return dim + 1


def frechet_distance(a, b) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets [N, d]."""
    a, b = _as_features(a, "first"), _as_features(b, "second")
    for f in (a, b):
        _need(f.shape[0], fd_min_samples(f.shape[1]), "FD", f"more than the {f.shape[1]} feature dimensions")
    return frechet_distance_from_stats(*mean_cov(a), *mean_cov(b))


def _kernel_sum(x: torch.Tensor, y: torch.Tensor, chunk: int) -> torch.Tensor:
    """Sum of k(x_i, y_j) over all pairs, a block of rows at a time (memory stays O(chunk * len(y)))."""
    d = x.shape[1]
    return sum(((x[i:i + chunk] @ y.T) / d + 1).pow(3).sum() for i in range(0, len(x), chunk))


def kid(a, b, chunk: int = 2048) -> float:
    """Unbiased KID (MMD^2, cubic polynomial kernel) between two feature sets, over all pairs.

    The KID paper averages over subsets of 1000 only to bound compute; the full U-statistic is the same
    unbiased estimate with less variance, and deterministic.
    """
    a, b = _as_features(a, "first"), _as_features(b, "second")
    for f in (a, b):
        _need(f.shape[0], 2, "KID", "the unbiased estimator leaves one point out")
    m, n, d = a.shape[0], b.shape[0], a.shape[1]
    diag_a = ((a * a).sum(1) / d + 1).pow(3).sum()
    diag_b = ((b * b).sum(1) / d + 1).pow(3).sum()
    saa = (_kernel_sum(a, a, chunk) - diag_a) / (m * (m - 1))
    sbb = (_kernel_sum(b, b, chunk) - diag_b) / (n * (n - 1))
    return float(saa + sbb - 2 * _kernel_sum(a, b, chunk) / (m * n))


def _kth_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    return torch.cat([torch.cdist(x[i:i + chunk], x).kthvalue(k + 1, dim=1).values for i in range(0, len(x), chunk)])


def _covered(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """Share of `points` inside at least one ball (centre, radius)."""
    inside = [(torch.cdist(points[i:i + chunk], centres) <= radii[None, :]).any(1)
              for i in range(0, len(points), chunk)]
    return torch.cat(inside).to(F64).mean()


def precision_recall(real, fake, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (k-NN manifolds) of `fake` against `real` feature sets."""
    real, fake = _as_features(real, "real"), _as_features(fake, "generated")
    for f in (real, fake):
        _need(f.shape[0], k + 1, f"precision/recall with k={k}", "k neighbours besides each point")
    precision = _covered(fake, real, _kth_radii(real, k, chunk), chunk)
    recall = _covered(real, fake, _kth_radii(fake, k, chunk), chunk)
    return float(precision), float(recall)
