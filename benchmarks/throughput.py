"""Throughput on CPU: unmix's digits U-Net against a diffusers UNet2DModel of matched size, side by side.

Measures images/s for one training step (loss, backward, clipping, AdamW, EMA: each library's own) and
for one network evaluation at batch 64; FLOPs per image from torch.utils.flop_counter; achieved FLOP/s
as a fraction of this machine's measured float32 matmul FLOP/s; and the samplers' own cost per step
beyond the network (unmix's default sampler vs diffusers' DPM-Solver++ multistep scheduler). The
candidates are timed in interleaved rounds and the median round is kept, so background load hits both.

    flock /tmp/unmix-heavy.lock python benchmarks/throughput.py [--threads 1] [--rounds 7]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from time_to_quality import DiffusersRecipe, machine
from torch.utils.flop_counter import FlopCounterMode
from unmix.train import TrainConfig, ema_update, resolve

from unmix.data import load_dataset
from unmix.nets import build_net
from unmix.samplers import DEFAULT_SAMPLER, sample


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def per_call(fn, iters: int) -> float:
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - start) / iters


def interleaved(candidates: dict, rounds: int, iters: int) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in alternating rounds after one warm-up round."""
    times = {k: [] for k in candidates}
    for r in range(rounds + 1):
        for name, fn in candidates.items():
            t = per_call(fn, iters)
            if r:
                times[name].append(t)
    return {k: statistics.median(v) for k, v in times.items()}


def unmix_setup(batch: int):
    data = load_dataset("digits")
    cfg, net_cfg, recipe = resolve(TrainConfig(data="digits"), data)
    net = build_net(net_cfg)
    ema = build_net(net_cfg).requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    denoiser = recipe.denoiser(net)
    x0, _ = data.batch(torch.arange(batch))
    g = torch.Generator().manual_seed(0)
    images = [0]

    def train_step():
        sigma, noise = recipe.sample_sigma(batch, g), torch.randn(x0.shape, generator=g)
        recipe.loss(denoiser, x0, sigma, noise).mean().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        images[0] += batch
        ema_update(ema, net, batch, images[0], cfg.ema_halflife_kimg, cfg.ema_rampup)

    sigma = torch.full((batch,), 1.0)
    x = torch.randn(x0.shape, generator=g)

    @torch.no_grad()
    def evaluate():
        denoiser(x, sigma)

    return net, train_step, evaluate, recipe


def diffusers_setup(batch: int):
    recipe = DiffusersRecipe(total_steps=10**6)
    data = load_dataset("digits")
    x0, _ = data.batch(torch.arange(batch))
    t = torch.full((batch,), 500)
    x = torch.randn(x0.shape)

    @torch.no_grad()
    def evaluate():
        recipe.unet(x, t)

    return recipe.unet, lambda: recipe.step(x0), evaluate


def sampler_overhead(batch: int, nfe: int, rounds: int) -> dict[str, float]:
    """Seconds per step spent outside the network: the network replaced by a constant."""
    from diffusers import DPMSolverMultistepScheduler

    x_shape = (batch, 1, 8, 8)
    zero = torch.zeros(x_shape)

    def unmix_run():
        sample(lambda x, s, c=None: zero, x_shape, DEFAULT_SAMPLER, nfe, seed=0)

    def diffusers_run():
        sched = DPMSolverMultistepScheduler(num_train_timesteps=1000)
        sched.set_timesteps(nfe)
        x = torch.randn(x_shape)
        for t in sched.timesteps:
            x = sched.step(zero, t, x).prev_sample

    t = interleaved({"unmix": unmix_run, "diffusers": diffusers_run}, rounds, 3)
    return {k: v / nfe for k, v in t.items()}


def matmul_flops(threads: int, n: int = 1024, rounds: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = interleaved({"mm": lambda: a @ b}, rounds, 5)["mm"]
    return 2 * n**3 / t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--out", default="runs/throughput/result.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B = args.batch

    u_net, u_train, u_eval, recipe = unmix_setup(B)
    d_net, d_train, d_eval = diffusers_setup(B)
    size = {"unmix": sum(p.numel() for p in u_net.parameters()), "diffusers": sum(p.numel() for p in d_net.parameters())}
    fwd = {"unmix": flops(u_eval) / B, "diffusers": flops(d_eval) / B}
    step = {"unmix": flops(u_train) / B, "diffusers": flops(d_train) / B}
    evals = interleaved({"unmix": u_eval, "diffusers": d_eval}, args.rounds, 5)
    trains = interleaved({"unmix": u_train, "diffusers": d_train}, args.rounds, 3)
    peak = matmul_flops(args.threads)
    overhead = sampler_overhead(B, 20, args.rounds)
    rows = {}
    for k in ("unmix", "diffusers"):
        rows[k] = {
            "parameters": size[k], "forward_mflop_per_image": fwd[k] / 1e6, "train_mflop_per_image": step[k] / 1e6,
            "eval_images_per_s": B / evals[k], "train_images_per_s": B / trains[k],
            "eval_flops_fraction_of_matmul": fwd[k] * B / evals[k] / peak,
            "train_flops_fraction_of_matmul": step[k] * B / trains[k] / peak,
            "sampler_overhead_ms_per_step": overhead[k] * 1e3,
            "sampler_overhead_fraction_of_eval": overhead[k] / evals[k],
        }
    result = {"rows": rows, "matmul_gflops": peak / 1e9, "threads": args.threads, "batch": B,
              "date": time.strftime("%Y-%m-%d"), "machine": machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['machine']}; batch {B}, {args.threads} thread(s); float32 matmul {peak / 1e9:.1f} GFLOP/s; "
          f"{result['date']}\n")
    print("| | parameters | MFLOP/image (fwd / train) | eval images/s | train images/s | eval / train FLOP/s vs matmul "
          "| sampler overhead per step |")
    print("|---|---|---|---|---|---|---|")
    for k, r in rows.items():
        print(f"| {k} | {r['parameters'] / 1e6:.2f} M | {r['forward_mflop_per_image']:.1f} / {r['train_mflop_per_image']:.1f} "
              f"| {r['eval_images_per_s']:.0f} | {r['train_images_per_s']:.0f} | {r['eval_flops_fraction_of_matmul']:.0%} / "
              f"{r['train_flops_fraction_of_matmul']:.0%} | {r['sampler_overhead_ms_per_step']:.2f} ms "
              f"({r['sampler_overhead_fraction_of_eval']:.1%} of an eval) |")


if __name__ == "__main__":
    main()
