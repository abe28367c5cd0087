"""How unmix's default sigma grids were chosen: a search on *tuning* mixtures, not the benchmark ones.

For each sampler and NFE budget, try Karras grids (rho, sigma_min, sigma_max) and rank them by
sliced W2 relative to the true-vs-true floor, averaged over two tuning mixtures that share no
parameters with benchmarks/samplers.py (different dimension, weights, spreads and positions).

    python benchmarks/tune_grid.py [--nfe 5 10] [--samplers ipndm_v unipc]
"""
from __future__ import annotations

import argparse
import itertools

import torch

from unmix.analytic import GaussianMixture
from unmix.metrics.exact import sliced_w2
from unmix.samplers import sample
from unmix.schedules import karras_sigmas


def tuning_mixtures():
    g = torch.Generator().manual_seed(1234)
    two_d = GaussianMixture(
        torch.tensor([0.3, 0.2, 0.15, 0.15, 0.1, 0.1]),
        torch.rand(6, 2, generator=g, dtype=torch.float64) * 1.6 - 0.8,
        (torch.rand(6, 2, generator=g, dtype=torch.float64) * 0.12 + 0.03) ** 2,
    )
    w = torch.rand(10, generator=g, dtype=torch.float64) + 0.2
    high_d = GaussianMixture(
        w / w.sum(),
        torch.rand(10, 32, generator=g, dtype=torch.float64) * 1.8 - 0.9,
        (torch.rand(10, 32, generator=g, dtype=torch.float64) * 0.25 + 0.05) ** 2,
    )
    return {"2d": two_d, "32d": high_d}


def score(gm, sampler, nfe, grid, n, ref, floor):
    x = sample(gm, (n, *gm.event_shape), sampler, nfe, sigmas=grid, seed=7, dtype=torch.float64)
    return sliced_w2(x, ref) / floor


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--samplers", nargs="+", default=["ipndm", "ipndm_v", "unipc", "dpmpp_2m", "dpmpp_3m", "euler"])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--rho", type=float, nargs="+", default=[1.5, 2, 3, 5, 7, 10])
    ap.add_argument("--sigma-min", type=float, nargs="+", default=[0.002, 0.005, 0.01, 0.02, 0.04])
    ap.add_argument("--sigma-max", type=float, nargs="+", default=[5, 10, 20, 80])
    args = ap.parse_args()
    torch.set_num_threads(1)
    mixtures = tuning_mixtures()
    refs = {k: (gm.sample(args.n, torch.Generator().manual_seed(5)), gm) for k, gm in mixtures.items()}
    floors = {k: sliced_w2(gm.sample(args.n, torch.Generator().manual_seed(6)), ref) for k, (ref, gm) in refs.items()}
    for sampler, nfe in itertools.product(args.samplers, args.nfe):
        steps = nfe  # all tuned samplers spend one call per step
        results = []
        for rho, smin, smax in itertools.product(args.rho, args.sigma_min, args.sigma_max):
            grid = karras_sigmas(steps, smin, smax, rho)
            s = sum(score(gm, sampler, nfe, grid, args.n, ref, floors[k]) for k, (ref, gm) in refs.items()) / len(refs)
            results.append((s, rho, smin, smax))
        results.sort()
        default = karras_sigmas(steps, 0.002, 80, 7)
        d = sum(score(gm, sampler, nfe, default, args.n, ref, floors[k]) for k, (ref, gm) in refs.items()) / len(refs)
        top = ", ".join(f"{s:.2f}x (rho {r}, min {a}, max {b})" for s, r, a, b in results[:args.top])
        print(f"{sampler:10s} NFE {nfe:3d}: EDM default {d:.2f}x | best {top}", flush=True)


if __name__ == "__main__":
    main()
