"""Sampler quality at equal NFE, unmix vs diffusers, on exact denoisers (no training noise).

Distributions: (a) "ring", 8 isotropic Gaussians on a circle of radius 0.8, std 0.05, equal weights;
(b) "digits", a 16-component diagonal mixture fitted to sklearn digits scaled to [-1, 1] (64-D).
Every method starts from its own fixed-seed noise; its N samples are compared with N fresh true
samples by sliced W2 (256 fixed directions) and by the gap in mean exact log-density
(mean log p(true) - mean log p(samples), nats). The floor is the same metrics for true vs true, averaged over 5 fresh true sets.

    python benchmarks/samplers.py [--n 20000] [--nfe 5 10 20 50 1000] [--dist ring digits] [--out docs/sampler_benchmark.md]
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from diffusers_bridge import make_variants, run as run_diffusers  # noqa: E402

from unmix.analytic import digits_mixture, ring_of_gaussians  # noqa: E402
from unmix.metrics.exact import log_density_gap, sliced_w2  # noqa: E402
from unmix.samplers import list_samplers, sample  # noqa: E402

DISTS = {"ring": ring_of_gaussians, "digits": digits_mixture}


def evaluate(gm, x, ref):
    return sliced_w2(x, ref), log_density_gap(gm.log_prob, x, ref)


def bench(dist: str, n: int, nfes: list[int], unmix_only: bool = False):
    gm = DISTS[dist]()
    shape = (n, *gm.event_shape)
    ref = gm.sample(n, torch.Generator().manual_seed(1))
    # one true-vs-true draw swings by +-30% (mode counts are multinomial): average five
    draws = [evaluate(gm, gm.sample(n, torch.Generator().manual_seed(10 + i)), ref) for i in range(5)]
    floor = tuple(sum(d[j] for d in draws) / len(draws) for j in range(2))
    rows = []  # (library, method, nfe, used, sw2, gap, seconds)
    for name in list_samplers():
        for nfe in nfes:
            t0 = time.perf_counter()
            x, used = sample(gm, shape, name, nfe, seed=3, dtype=torch.float64, return_nfe=True)
            rows.append(("unmix", name, nfe, used, *evaluate(gm, x, ref), time.perf_counter() - t0))
            print(dist, *rows[-1], flush=True)
    if not unmix_only:
        for name, factory in make_variants().items():
            for nfe in nfes:
                t0 = time.perf_counter()
                x, used = run_diffusers(factory, gm, shape, nfe, torch.Generator().manual_seed(3))
                if x is None or not torch.isfinite(x).all():
                    rows.append(("diffusers", name, nfe, used, float("nan"), float("nan"), 0.0))
                else:
                    rows.append(("diffusers", name, nfe, used, *evaluate(gm, x, ref), time.perf_counter() - t0))
                print(dist, *rows[-1], flush=True)
    return floor, rows


def best(rows, lib, nfe):
    cands = [r for r in rows if r[0] == lib and r[2] == nfe and r[4] == r[4]]
    return min(cands, key=lambda r: r[4]) if cands else None


def markdown(dist, n, nfes, floor, rows) -> str:
    out = [f"### {dist} (N = {n}; floor: SW2 {floor[0]:.4f}, log-density gap {floor[1]:+.4f} nats)", ""]
    out.append("| library | method | " + " | ".join(f"NFE {k}" for k in nfes) + " |")
    out.append("|---|---|" + "---|" * len(nfes))
    methods = dict.fromkeys((r[0], r[1]) for r in rows)
    for lib, m in methods:
        cells = []
        for k in nfes:
            r = next(r for r in rows if r[0] == lib and r[1] == m and r[2] == k)
            cells.append("n/a" if r[4] != r[4] else f"{r[4]:.4f} / {r[5]:+.3f}" + ("" if r[3] == k else f" ({r[3]})"))
        out.append(f"| {lib} | {m} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Cells: SW2 / log-density gap (nats); (k) = NFE actually used when below the budget.")
    out.append("")
    out.append("| NFE | best unmix | SW2 | best diffusers | SW2 | ratio diffusers/unmix | unmix / floor |")
    out.append("|---|---|---|---|---|---|---|")
    for k in nfes:
        u, d = best(rows, "unmix", k), best(rows, "diffusers", k)
        if u is None:
            continue
        dcells = f"{d[1]} | {d[4]:.4f} | {d[4] / u[4]:.2f}" if d else "- | - | -"
        out.append(f"| {k} | {u[1]} | {u[4]:.4f} | {dcells} | {u[4] / floor[0]:.2f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50, 1000])
    ap.add_argument("--dist", nargs="+", default=list(DISTS), choices=list(DISTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unmix-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown tables here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    header = (f"Measured {date.today()} on {platform.machine()} {platform.system()}, "
              f"torch {torch.__version__}, {args.threads} thread(s), float64 exact denoisers.\n\n")
    text, raw = header, {}
    for dist in args.dist:
        floor, rows = bench(dist, args.n, args.nfe, args.unmix_only)
        text += markdown(dist, args.n, args.nfe, floor, rows) + "\n"
        raw[dist] = {"floor": floor, "rows": rows}
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
