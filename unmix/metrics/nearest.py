"""Exact nearest and second-nearest pictures under a distance that forgives small shifts; fast enough for 1,000
samples against 8,000 pictures in seconds on two CPU cores.

Distance: d(s, t)^2 = min over whole-pixel shifts |dy|, |dx| <= r of the mean squared difference between t's
centre (the picture less a frame of r pixels) and the window of s moved by (dy, dx) over it, r = shift_radius(side).
Plain L2 in pixels, as Gu et al. and Carlini et al. (2023) use, misses a copy moved by one pixel: on sharp artwork
that costs as much as another picture. Comparing windows needs no guess for pixels moved in from outside (edges
repeated or a fill colour would count a moved copy's lost column as a difference: a digit's ink moved into its
empty border), so a copy moved by up to r pixels scores 0; what lies only in the outer r pixels is not compared.
It stays in pixels (a PSNR keeps its meaning, at the best alignment) and needs no learnt features, which a
blurred or recoloured copy could fool either way.

Speed without approximation: for P the orthogonal projection on the indexed pictures' top BASIS_DIM principal
directions and Q = I - P,

    |a - t|^2 = |P(a - t)|^2 + |Q(a - t)|^2 >= |Pa - Pt|^2 + (|Qa| - |Qt|)^2,

a lower bound that one matmul over BASIS_DIM + 1 numbers gives for every pair, and a tight one: the pictures lie
close to their own principal subspace, and what a sample has outside it is still counted, by its norm. Each query
measures its k lowest-bound pictures exactly; where the (k+1)-th bound is below the exact second-nearest distance,
k grows (to every picture at worst), so the answer is the brute-force answer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

BASIS_DIM = 256  # dimensions of the subspace the lower bound works in
BUDGET = 1 << 25  # floats in one working block (128 MB)
K_FIRST = 16  # pictures measured exactly per query before the bound is consulted
MARGIN = 1e-4  # the bound is lowered by MARGIN (|a|^2 + |t|^2), far more than float32 rounding in its matmul


def shift_radius(side: int) -> int:
    """Whole-pixel shifts tried each way: 1 up to 63 px, then 1 per 32 px."""
    return max(1, side // 32)


@dataclass(frozen=True)
class Nearest:
    """Per query: mean squared differences to the nearest and second-nearest picture, and the nearest's position."""

    mse1: torch.Tensor
    mse2: torch.Tensor
    nearest: torch.Tensor

    @property
    def ratio(self) -> torch.Tensor:
        """d1 / d2 (0 where both are 0)."""
        return torch.where(self.mse2 > 0, (self.mse1 / self.mse2.clamp(min=1e-30)).sqrt(), 0.0)


def principal_basis(flat: torch.Tensor) -> torch.Tensor | None:
    """An orthonormal basis [D, BASIS_DIM] of the pictures' top principal directions (about their mean; a randomised
    range finder with two power iterations, fixed seed); None when a picture has no more numbers than that (the
    bound is then exact)."""
    if flat.shape[1] <= BASIS_DIM:
        return None
    flat = flat - flat.mean(0)
    y = flat.T @ torch.randn(len(flat), BASIS_DIM, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        y = flat.T @ (flat @ torch.linalg.qr(y).Q)
    return torch.linalg.qr(y).Q


def centre(pictures: torch.Tensor) -> torch.Tensor:
    """[N, D]: the part of each picture the distance compares, less a frame of shift_radius pixels, flattened."""
    r = shift_radius(max(pictures.shape[-2:]))
    return pictures[..., r:pictures.shape[-2] - r, r:pictures.shape[-1] - r].flatten(-3)


def _views(x: torch.Tensor, r: int) -> torch.Tensor:
    """[N, K, D]: the windows of each picture over the centre, moved by every (dy, dx) in [-r, r]^2."""
    h, w = x.shape[-2] - 2 * r, x.shape[-1] - 2 * r
    return torch.stack([x[..., dy:dy + h, dx:dx + w] for dy in range(2 * r + 1) for dx in range(2 * r + 1)],
                       1).flatten(2)


class _Projected:
    """Pictures [..., D] with |x|^2 and x' = (P x, |Q x|), so that |a|^2 + |t|^2 - 2 a'.t' <= |a - t|^2."""

    def __init__(self, flat: torch.Tensor, basis: torch.Tensor | None):
        self.flat, self.sq = flat, flat.square().sum(-1)
        low = flat if basis is None else flat @ basis
        high = (self.sq - low.square().sum(-1)).clamp(min=0).sqrt()
        self.bound = torch.cat([low, high[..., None]], -1)


def search(pictures: torch.Tensor, x: torch.Tensor, basis: torch.Tensor | None = None,
           exclude: torch.Tensor | None = None) -> Nearest:
    """The exact nearest / second-nearest of each query [M, C, H, W] among pictures [N, C, H, W] (N >= 2, or 3
    with `exclude`: one position per query left out, for leave-one-out); `basis` from principal_basis(centre(pictures))."""
    r = shift_radius(max(pictures.shape[-2:]))
    flat = centre(pictures)
    mean = flat.mean(0)  # distances do not change when both sides lose it; float32 rounding shrinks with the norms
    index = _Projected(flat - mean, basis)
    n, size = index.flat.shape
    step = max(1, BUDGET // ((2 * r + 1) ** 2 * max(n, size)))
    parts = []
    for i in range(0, len(x), step):
        queries = _Projected(_views(x[i:i + step], r) - mean, basis)
        lb = _lower_bound(queries, index)
        out = exclude[i:i + step] if exclude is not None else None
        if out is not None:
            lb[torch.arange(len(lb)), out] = torch.inf
        parts.append(_refine(queries, index, lb, out))
    mse1, mse2, nearest = (torch.cat(p) for p in zip(*parts))
    return Nearest(mse1 / size, mse2 / size, nearest)


def _lower_bound(q: _Projected, index: _Projected) -> torch.Tensor:
    """[m, N]: min over the shifts of |a|^2 + |t|^2 - 2 a'.t', lowered by the rounding margin."""
    m, k, d = q.bound.shape
    lb = torch.addmm(index.sq[None] * (1 - MARGIN), q.bound.reshape(m * k, d), index.bound.T, alpha=-2)
    lb += q.sq.reshape(m * k, 1) * (1 - MARGIN)
    return lb.view(m, k, -1).amin(1).clamp_(min=0)


def _exact(q: _Projected, index: _Projected, rows: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """[len(rows), k]: min over the shifts of |a - t|^2 for each query row's candidates, as |a|^2 + |t|^2 - 2 a.t in
    float32 about the pictures' mean (against float64: MSE within 3e-7 for 1,000 samples of 32 px emoji, under the
    8-bit rounding floor of 5.1e-6)."""
    dots = torch.bmm(q.flat[rows], index.flat[cand].transpose(1, 2))
    return (q.sq[rows][:, :, None] + index.sq[cand][:, None, :] - 2 * dots).clamp(min=0).amin(1)


def _refine(q: _Projected, index: _Projected, lb: torch.Tensor, exclude) -> tuple[torch.Tensor, ...]:
    """Exact squared distances to the lowest-bound candidates, k growing until the bound certifies the top two."""
    m, n = lb.shape
    sq1, sq2, nearest = torch.empty(m), torch.empty(m), torch.empty(m, dtype=torch.long)
    todo, k = torch.arange(m), K_FIRST
    while len(todo):
        k = min(k, n)
        bounds, cand = lb[todo].topk(min(k + 1, n), largest=False)
        cand = cand[:, :k]
        rows = max(1, BUDGET // (k * index.flat.shape[1]))
        exact = torch.cat([_exact(q, index, todo[j:j + rows], cand[j:j + rows]) for j in range(0, len(todo), rows)])
        if exclude is not None:
            exact[cand == exclude[todo, None]] = torch.inf
        best, at = exact.topk(2, largest=False)
        done = torch.ones(len(todo), dtype=torch.bool) if k == n else bounds[:, k] >= best[:, 1]
        finished = todo[done]
        sq1[finished], sq2[finished] = best[done, 0], best[done, 1]
        nearest[finished] = cand[done].gather(1, at[done, :1]).squeeze(1)
        todo, k = todo[~done], k * 8
    return sq1, sq2, nearest
