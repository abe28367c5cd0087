"""The 2015 swiss roll, reproduced: held-out log-likelihood in bits, beside Sohl-Dickstein et al. (2015).

Their table 1 trains on a 2-D swiss roll scaled to unit variance per coordinate and reports a lower
bound on the held-out log-likelihood, K = 2.35 bits per point, and K - L_null = 6.45 bits, L_null being
the log-likelihood of an isotropic Gaussian of the data's covariance. Here unmix's default 2-D recipe
(EDM, MLP, `unmix train --data swissroll` settings) is trained on unmix's swiss roll standardised the
same way, and the held-out log-likelihood is the probability-flow ODE's (exact trace in 2-D) on a fresh
draw, standardised with the training statistics. The true density of the data (known in closed form,
unmix.metrics.toys) gives the ceiling no model can beat on average.

    flock /tmp/unmix-heavy.lock python benchmarks/swissroll_nll.py [--steps 4000] [--threads 1]

Writes runs/swissroll_nll/result.json and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from unmix.api import load
from unmix.checkpoint import list_checkpoints, open_checkpoint
from unmix.data import Dataset
from unmix.data.toys import load_toy
from unmix.likelihood import ode_log_likelihood
from unmix.metrics.toys import toy_mixture
from time_to_quality import machine
from unmix.train import TrainConfig, Trainer

PAPER_K, PAPER_GAIN = 2.35, 6.45  # bits, Sohl-Dickstein et al. 2015, table 1 (swiss roll)
LN2 = math.log(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4000, help="training steps (the 2-D default)")
    p.add_argument("--n", type=int, default=10000, help="held-out points")
    p.add_argument("--ode-steps", type=int, default=64, help="RK4 steps of the likelihood ODE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/swissroll_nll")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)

    train = load_toy("swissroll").data.double()  # seed 0: the training draw
    mean, std = train.mean(0), train.std(0)
    unit = Dataset("swissroll", ((train - mean) / std).float())
    run = work / "run"
    start = time.perf_counter()
    done = open_checkpoint(run).step if list_checkpoints(run) else 0
    if done < args.steps:  # train, or continue a run that was stopped (Ctrl-C / SIGTERM save a checkpoint)
        cfg = TrainConfig(data="swissroll", steps=args.steps, out=str(run), threads=args.threads,
                          sample_every=args.steps, checkpoint_every=500)
        Trainer(cfg, dataset=unit, resume=done > 0,
                overrides={"steps": args.steps, "threads": args.threads} if done else None).run()
    train_seconds = time.perf_counter() - start

    held = load_toy("swissroll", n=args.n, seed=1).data.double()
    y = (held - mean) / std
    model = load(run)
    lo, hi = model.recipe.sigma_range()
    start = time.perf_counter()
    logp = torch.cat([ode_log_likelihood(model.denoiser, y[i:i + 2000], sigma_min=lo, sigma_max=hi,
                                         steps=args.ode_steps, trace="exact") for i in range(0, len(y), 2000)])
    ode_seconds = time.perf_counter() - start
    log_det = float(std.log().sum())  # y = (x - mean) / std: log p_y = log p_x + sum log std
    truth = toy_mixture("swissroll").log_prob(held) + log_det
    gauss = -0.5 * (y**2).sum(1) - math.log(2 * math.pi)  # isotropic unit Gaussian: L_null
    bits = lambda t: float(t.mean() / LN2)  # noqa: E731
    sem = lambda t: float(t.std() / math.sqrt(len(t)) / LN2)  # noqa: E731
    result = {
        "unmix_bits": bits(logp), "unmix_bits_sem": sem(logp), "unmix_gain_bits": bits(logp - gauss),
        "true_density_bits": bits(truth), "gaussian_bits": bits(gauss),
        "paper_K_bits": PAPER_K, "paper_gain_bits": PAPER_GAIN,
        "train_steps": args.steps, "train_seconds_this_run": round(train_seconds, 1), "ode_steps": args.ode_steps,
        "ode_seconds": round(ode_seconds, 1), "n_held_out": args.n, "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"), "machine": machine(),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| model | held-out log-likelihood K (bits/point) | K - L_null (bits) |")
    print("|---|---|---|")
    print(f"| Sohl-Dickstein et al. 2015 (lower bound) | {PAPER_K:.2f} | {PAPER_GAIN:.2f} |")
    print(f"| unmix, EDM + MLP, {args.steps} steps (probability-flow ODE) | {result['unmix_bits']:.2f} "
          f"+- {result['unmix_bits_sem']:.2f} | {result['unmix_gain_bits']:.2f} |")
    print(f"| true density of the data (ceiling) | {result['true_density_bits']:.2f} | "
          f"{result['true_density_bits'] - result['gaussian_bits']:.2f} |")


if __name__ == "__main__":
    main()
