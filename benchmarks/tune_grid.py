"""How the default ("auto") sampler's grids were chosen: searches on *tuning* mixtures, never the benchmark's.

Tuning mixtures (none shares parameters or data with benchmarks/samplers.py's ring and digits):
  2d        6 Gaussians in the plane, random positions and spreads;
  32d       10 diagonal Gaussians in 32-D, random;
  glyphs64  16 components fitted to 3,000 synthetic 8x8 glyphs (random bars on a dark background);
  patches64 16 components fitted to 8x8 patches of scikit-learn's two bundled photos (4x downsampled);
  rand64    12 diagonal Gaussians in 64-D, means in [-1, 1], variances log-uniform in [1e-6, 0.5].
Score of a grid: mean over mixtures of log(SW2 / floor) + w * TV / TV floor, with TV the mode-weight
error of benchmarks/samplers.py (w = 0.5, or 0.05 where SW2 should dominate).

    python benchmarks/tune_grid.py levels --sampler unipc --nfe 3      # coordinate descent on log sigma
    python benchmarks/tune_grid.py grid3 --sampler unipc               # full grid over 3 levels
    python benchmarks/tune_grid.py range --sampler ipndm --nfe 4 5 10  # log-linear (sigma_min, sigma_max)
    python benchmarks/tune_grid.py pilot --w 0.05 --mixtures 32d glyphs64 patches64 rand64  # pilot vs fixed grid
    python benchmarks/tune_grid.py --smoke      # each mode at toy size (N = 200, two mixtures, one pass)

What was run (2026-11, 1 thread, N = 3000 per mixture): `levels` for ipndm / dpmpp_2m / unipc at 3-5
NFE (w = 0.5, all mixtures but patches64), Karras-parameter descent at 10 NFE (rho went to its bound:
log-linear), `grid3` for unipc at 3 NFE on the three 64-D mixtures (w = 0.05) -> (5, 2, 0.16), and on
2d -> (5, 0.62, 0.164); `range` checks of log-linear ipndm at 4-5 and 10 NFE on all mixtures and on
2d alone (sigma_max 5 at 4-5 steps, 28 at 10; sigma_min 0.02 * 10 / steps in 2-D, 0.06 * 10 / steps
in 64-D). These fixed unmix.schedules.SEARCHED_LEVELS and few_step_range. The benchmark mixtures were
only used to check the result, as docs/sampler_benchmark.md reports.

The 3-level grid then became a pilot run per denoiser (unmix.samplers.pilot_sigmas, used from 16 values per
sample on): `pilot` scores it against the fixed (5, 2, 0.16) on the 32-D and 64-D tuning mixtures, 2026-11-29:
mean 1.42 against 1.59 (w = 0.05; better on 32d 0.74 / 1.07, glyphs64 2.91 / 3.09 and patches64 1.43 / 1.74,
worse on rand64 0.58 / 0.48). Its settings (256 pilot samples, a 24-step reference, sliced W2 alone) were
chosen there too: a k-means mode-frequency term and 512 samples changed nothing or scored worse.
"""
from __future__ import annotations

import argparse
import itertools
import math

import numpy as np
import torch

from unmix.analytic import GaussianMixture
from unmix.metrics.exact import mode_weight_tv, sliced_w2
from unmix.samplers import pilot_sigmas, sample
from unmix.schedules import loglinear_sigmas, searched_sigmas


def glyphs(n: int = 3000, size: int = 8, seed: int = 0) -> torch.Tensor:
    """n synthetic glyphs [n, size*size] in [-1, 1]: 1-3 bars (row, column or diagonal) of random brightness."""
    g = torch.Generator().manual_seed(seed)
    imgs = torch.full((n, size, size), -1.0, dtype=torch.float64)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            kind = int(torch.randint(0, 3, (1,), generator=g))
            a, b = torch.randint(1, size - 1, (2,), generator=g).tolist()
            lo, hi = sorted(torch.randint(1, size - 1, (2,), generator=g).tolist())
            val = float(torch.rand(1, generator=g)) * 1.5 + 0.5
            line = [(yy == a) & (xx >= lo) & (xx <= hi), (xx == b) & (yy >= lo) & (yy <= hi),
                    ((yy - xx) == (a - b)) & (yy >= lo) & (yy <= hi)][kind]
            imgs[i][line] = (imgs[i][line] + val).clamp(max=1.0)
    return imgs.reshape(n, -1)


def photo_patches(per_image: int = 1500, seed: int = 0) -> torch.Tensor:
    """8x8 grey patches of scikit-learn's bundled photos, 4x downsampled, in [-1, 1]."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    out = []
    for im in load_sample_images().images:
        grey = im.mean(2)
        h, w = grey.shape[0] // 4 * 4, grey.shape[1] // 4 * 4
        small = grey[:h, :w].reshape(h // 4, 4, w // 4, 4).mean((1, 3))
        for _ in range(per_image):
            y, x = rng.integers(0, small.shape[0] - 8), rng.integers(0, small.shape[1] - 8)
            out.append(small[y: y + 8, x: x + 8].reshape(-1))
    return torch.tensor(np.array(out)) / 127.5 - 1


MIXTURES = ("2d", "32d", "glyphs64", "patches64", "rand64")


def tuning_mixtures(names) -> dict[str, GaussianMixture]:
    """The named tuning mixtures (the two fitted ones are built only when asked for)."""
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
    g = torch.Generator().manual_seed(7)
    w = torch.rand(12, generator=g, dtype=torch.float64) + 0.2
    logv = torch.rand(12, 64, generator=g, dtype=torch.float64) * math.log(0.5 / 1e-6) + math.log(1e-6)
    rand64 = GaussianMixture(w / w.sum(), torch.rand(12, 64, generator=g, dtype=torch.float64) * 2 - 1, logv.exp())
    built = {"2d": lambda: two_d, "32d": lambda: high_d, "glyphs64": lambda: GaussianMixture.fit(glyphs(), 16, 0),
             "patches64": lambda: GaussianMixture.fit(photo_patches(), 16, 0), "rand64": lambda: rand64}
    return {name: built[name]() for name in names}


class Scorer:
    """log(SW2 / floor) + w * TV / TV floor, averaged over mixtures, with fixed seeds (common random numbers)."""

    def __init__(self, mixtures: dict[str, GaussianMixture], n: int, w: float):
        self.n, self.w, self.items = n, w, []
        for name, gm in mixtures.items():
            ref = gm.sample(n, torch.Generator().manual_seed(1))
            fresh = [gm.sample(n, torch.Generator().manual_seed(10 + i)) for i in range(3)]
            floor = sum(sliced_w2(f, ref) for f in fresh) / 3
            tv_floor = sum(mode_weight_tv(gm, f) for f in fresh) / 3
            self.items.append((name, gm, ref, floor, tv_floor))

    def __call__(self, sampler: str, levels: list[float], seed: int = 7, **opts) -> float:
        total = 0.0
        for _, gm, ref, floor, tv_floor in self.items:
            grid = torch.tensor([*levels, 0.0], dtype=torch.float64)
            x = sample(gm, (self.n, *gm.event_shape), sampler, len(levels), sigmas=grid, seed=seed,
                       dtype=torch.float64, **opts)
            if not torch.isfinite(x).all():
                return math.inf
            total += math.log(sliced_w2(x, ref) / floor) + self.w * mode_weight_tv(gm, x) / tv_floor
        return total / len(self.items)


def descend_levels(score, sampler: str, levels: list[float], passes: int = 2):
    """Coordinate descent on each level in log sigma (multiplicative moves), keeping the grid descending."""
    best = score(sampler, levels)
    for _ in range(passes):
        improved = False
        for i, f in itertools.product(range(len(levels)), (0.5, 0.7, 0.85, 1.18, 1.4, 2.0)):
            trial = list(levels)
            trial[i] *= f
            if any(a <= b for a, b in zip(trial, trial[1:])) or trial[-1] < 1e-3 or trial[0] > 500:
                continue
            s = score(sampler, trial)
            if s < best - 1e-4:
                best, levels, improved = s, trial, True
        if not improved:
            break
    return levels, best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", choices=["levels", "grid3", "range", "pilot"])
    ap.add_argument("--sampler", default="unipc")
    ap.add_argument("--nfe", type=int, nargs="+", default=[3])
    ap.add_argument("--mixtures", nargs="+", default=list(MIXTURES), choices=MIXTURES)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--w", type=float, default=0.5, help="weight of the mode-weight term")
    ap.add_argument("--passes", type=int, default=2, help="levels: rounds of coordinate descent")
    ap.add_argument("--smoke", action="store_true", help="every mode at toy size: N = 200, 2d and patches64 (CI)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.smoke:
        args.n, args.mixtures, args.passes = 200, ["2d", "patches64"], 1
        for args.mode in ("levels", "grid3", "range", "pilot"):
            run(args)
    elif args.mode is None:
        ap.error("give a mode (levels, grid3, range, pilot) or --smoke")
    else:
        run(args)


def run(args) -> None:
    mixtures = tuning_mixtures(args.mixtures)
    if args.mode == "pilot":
        fixed = searched_sigmas(3, dim=64)[:-1].tolist()
        totals = [0.0, 0.0]
        for name, gm in mixtures.items():
            piloted = pilot_sigmas(gm, gm.event_shape, dtype=torch.float64)[:-1].tolist()
            one = Scorer({name: gm}, args.n, args.w)
            s_pilot, s_fixed = one("unipc", piloted), one("unipc", fixed)
            totals = [totals[0] + s_pilot / len(mixtures), totals[1] + s_fixed / len(mixtures)]
            print(f"{name}: pilot {[round(v, 3) for v in piloted]} score {s_pilot:.3f}; fixed {fixed} {s_fixed:.3f}")
        print(f"mean score: pilot {totals[0]:.3f}, fixed {totals[1]:.3f}")
        return
    score = Scorer(mixtures, args.n, args.w)
    if args.mode == "grid3":
        results = [(score(args.sampler, [a, b, c]), (a, b, c)) for a, b, c in itertools.product(
            [5, 10, 20, 40, 80, 160], [0.6, 1, 1.5, 2, 3, 4.5, 7], [0.01, 0.02, 0.04, 0.08, 0.16]) if a > b > c]
        for s, levels in sorted(results)[:5]:
            print(f"{args.sampler} {levels}: score {s:.3f}")
        return
    for nfe in args.nfe:
        if args.mode == "levels":
            levels, s = descend_levels(score, args.sampler, loglinear_sigmas(nfe, 0.03, 20.0)[:-1].tolist(), args.passes)
            print(f"{args.sampler} NFE {nfe}: {[round(v, 4) for v in levels]} score {s:.3f}", flush=True)
        else:
            for lo_scale, hi in itertools.product((0.01, 0.02, 0.04, 0.06), (3, 5, 10, 28, 80)):
                lo = lo_scale * 10 / nfe
                s = score(args.sampler, loglinear_sigmas(nfe, lo, hi)[:-1].tolist())
                print(f"{args.sampler} NFE {nfe} log-linear ({lo:.3f}, {hi}): score {s:.3f}", flush=True)


if __name__ == "__main__":
    main()
