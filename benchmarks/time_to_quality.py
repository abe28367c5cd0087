"""Time to quality on digits: unmix's default recipe against the diffusers training recipe, side by side.

The diffusers side is what a diffusers user would write from the unconditional-training example
(examples/unconditional_image_generation), adapted to 8x8 digits: a UNet2DModel of about unmix's size,
DDPMScheduler with 1000 linear steps, epsilon prediction, AdamW (lr 1e-4, betas 0.95/0.999, weight decay
1e-6) with 500 warm-up steps and cosine decay, EMAModel (inv_gamma 1, power 3/4, max decay 0.9999),
gradient clipping at 1, batch 64, no flips (digits are not mirror-symmetric). The unmix side is
`unmix train --data digits` with its defaults. Both train for the same optimizer steps; checkpoints at
each listed step are sampled with each recipe's own best sampler at NFE 20 and at its recommended NFE
(unmix: its default sampler at `unmix sample`'s default NFE; diffusers: DDPMPipeline's 1000 steps), and
measured with `unmix eval` (FD, KID, precision, recall against all 1,797 digits).

    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py train-unmix
    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py train-diffusers
    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py evaluate
    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py nll     # bits/dim of the last checkpoints
    python benchmarks/time_to_quality.py report          # markdown table from the JSON

Training writes checkpoints under --work and a JSON of seconds per step; `evaluate` measures whatever
checkpoints exist, so a run cut short still reports the steps it reached.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from unmix.data import load_dataset
from unmix.metrics import evaluate

STEPS = (1000, 2000, 5000, 10000)
DIFFUSERS_SAMPLERS = {"DPM-Solver++ 2M, NFE 20": ("dpmsolver", 20), "DDPM, NFE 1000 (recommended)": ("ddpm", 1000)}


def machine() -> str:
    """The CPU's model name and core count, for result tables."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.machine()
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}"


# -- the diffusers recipe ----------------------------------------------------------------------------
def diffusers_unet():
    """UNet2DModel for 1x8x8 at unmix's digits size: widths 32/64/64, attention at 4x4 and 2x2 like unmix."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


class DiffusersRecipe:
    """One training step of the diffusers example, and its sampling loops."""

    def __init__(self, total_steps: int, seed: int = 0):
        from diffusers import DDPMScheduler, UNet2DModel
        from diffusers.optimization import get_cosine_schedule_with_warmup
        from diffusers.training_utils import EMAModel

        torch.manual_seed(seed)
        self.unet = diffusers_unet()
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
        self.lr = get_cosine_schedule_with_warmup(self.opt, num_warmup_steps=500, num_training_steps=total_steps)
        self.ema = EMAModel(self.unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                            model_cls=UNet2DModel, model_config=self.unet.config)
        self.gen = torch.Generator().manual_seed(seed)

    def step(self, x0: torch.Tensor) -> float:
        noise = torch.randn(x0.shape, generator=self.gen)
        t = torch.randint(0, 1000, (x0.shape[0],), generator=self.gen)
        pred = self.unet(self.scheduler.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(pred, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), 1.0)
        self.opt.step()
        self.lr.step()
        self.opt.zero_grad()
        self.ema.step(self.unet.parameters())
        return loss.item()


@torch.no_grad()
def diffusers_sample(unet, kind: str, steps: int, n: int, seed: int = 0, batch: int = 500) -> torch.Tensor:
    """n samples with a diffusers scheduler loop, as DDPMPipeline / DPMSolverMultistepScheduler users write it."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

    out = []
    for lo in range(0, n, batch):
        size = min(batch, n - lo)
        sched = (DDPMScheduler(num_train_timesteps=1000) if kind == "ddpm"
                 else DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++", solver_order=2))
        sched.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed + lo)
        x = torch.randn((size, 1, 8, 8), generator=g)
        for t in sched.timesteps:
            eps = unet(x, t).sample
            x = sched.step(eps, t, x, generator=g).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)


# -- commands ----------------------------------------------------------------------------------------
def train_unmix(args) -> None:
    from unmix.train import TrainConfig, Trainer

    from unmix.store.checkpoint import list_checkpoints

    out = Path(args.work) / "unmix"
    cfg = TrainConfig(data="digits", steps=max(args.steps), out=str(out), threads=args.threads,
                      checkpoint_every=math.gcd(*args.steps), keep=max(args.steps) // math.gcd(*args.steps),
                      sample_every=max(args.steps), log_every=100)
    resume = bool(list_checkpoints(out))  # a run cut short continues where it stopped
    runtime = {"steps": cfg.steps, "threads": args.threads, "checkpoint_every": cfg.checkpoint_every, "keep": cfg.keep}
    Trainer(cfg, resume=resume, overrides=runtime if resume else None).run()  # a shorter earlier run kept fewer


def train_diffusers(args) -> None:
    from safetensors.torch import save_file

    torch.set_num_threads(args.threads)
    out = Path(args.work) / "diffusers"
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    x_all, _ = data.batch(torch.arange(len(data)))
    recipe = DiffusersRecipe(max(args.total_steps, max(args.steps)))  # cosine decay planned over the whole run
    order = torch.randperm(len(x_all), generator=recipe.gen)
    pos, seconds, log = 0, 0.0, []
    for step in range(1, max(args.steps) + 1):
        start = time.perf_counter()
        if pos + 64 > len(order):  # a shuffled DataLoader, last partial batch dropped
            order, pos = torch.randperm(len(x_all), generator=recipe.gen), 0
        loss = recipe.step(x_all[order[pos:pos + 64]])
        pos += 64
        seconds += time.perf_counter() - start
        if step % 100 == 0 or step in args.steps:
            log.append({"step": step, "loss": loss, "seconds": round(seconds, 2)})
        if step in args.steps:
            recipe.ema.store(recipe.unet.parameters())
            recipe.ema.copy_to(recipe.unet.parameters())
            save_file({k: v.contiguous() for k, v in recipe.unet.state_dict().items()}, out / f"ema-{step:08d}.safetensors")
            recipe.ema.restore(recipe.unet.parameters())
            (out / "stats.json").write_text(json.dumps(log, indent=1))
            print(f"diffusers recipe: step {step}, {seconds:.0f} s", flush=True)


def _unmix_seconds(run: Path) -> dict[int, float]:
    """Training seconds at each logged step (runs resumed from a checkpoint add up their segments)."""
    out, offset, last = {}, 0.0, 0.0
    for line in (run / "stats.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec["seconds"] < last:
            offset += last
        last = rec["seconds"]
        out[rec["step"]] = offset + rec["seconds"]
    return out


def evaluate_all(args) -> None:
    from safetensors.torch import load_file

    from unmix.api import load
    from unmix.samplers import DEFAULT_SAMPLER

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else []
    done = {(r["recipe"], r["step"], r["sampler"]) for r in results}

    def record(recipe, step, sampler, seconds, samples, sample_seconds):
        m = evaluate(samples, "digits")
        results.append({"recipe": recipe, "step": step, "sampler": sampler, "train_seconds": round(seconds, 1),
                        "sample_seconds": round(sample_seconds, 1), **m})
        results_path.write_text(json.dumps(results, indent=1))
        print(recipe, step, sampler, {k: round(v, 4) for k, v in m.items()}, flush=True)

    unmix_seconds = _unmix_seconds(work / "unmix") if (work / "unmix" / "stats.jsonl").exists() else {}
    for step in args.steps:
        ckpt = work / "unmix" / f"checkpoint-{step:08d}"
        for label, nfe in ((f"{DEFAULT_SAMPLER}, NFE 20", 20), (f"{DEFAULT_SAMPLER}, NFE 32 (recommended)", 32)):
            if ckpt.exists() and ("unmix", step, label) not in done:
                model = load(ckpt)
                start = time.perf_counter()
                x = model.sample(args.n, seed=0, nfe=nfe, batch_size=500)
                record("unmix", step, label, unmix_seconds.get(step, math.nan), x, time.perf_counter() - start)
    diff_stats = work / "diffusers" / "stats.json"
    diff_seconds = {r["step"]: r["seconds"] for r in json.loads(diff_stats.read_text())} if diff_stats.exists() else {}
    for step in args.steps:
        weights = work / "diffusers" / f"ema-{step:08d}.safetensors"
        for label, (kind, nfe) in DIFFUSERS_SAMPLERS.items():
            if nfe > args.max_nfe or not weights.exists() or ("diffusers", step, label) in done:
                continue
            unet = diffusers_unet()
            unet.load_state_dict(load_file(weights))
            start = time.perf_counter()
            x = diffusers_sample(unet.eval(), kind, nfe, args.n)
            record("diffusers", step, label, diff_seconds.get(step, math.nan), x, time.perf_counter() - start)


def likelihoods(args) -> None:
    """Bits/dim of both recipes' last checkpoints on the same seeded digits: unmix's (continuous-time)
    by the probability-flow ODE, the diffusers model (discrete-time) by DDPM's VLB and by the ODE."""
    from safetensors.torch import load_file

    from unmix.denoiser import NetworkDenoiser
    from unmix.likelihood import checkpoint_nll, ode_bits_per_dim, vlb_bits_per_dim
    from unmix.schedules import DiscreteSchedule

    torch.set_num_threads(args.threads)
    work, step, n = Path(args.work), max(args.steps), args.n_nll
    rows = [{"recipe": "unmix", "method": "ode", **checkpoint_nll(work / "unmix" / f"checkpoint-{step:08d}", "ode", n, steps=32)}]
    unet = diffusers_unet()
    unet.load_state_dict(load_file(work / "diffusers" / f"ema-{step:08d}.safetensors"))
    schedule = DiscreteSchedule.linear()
    denoiser = NetworkDenoiser(lambda x, t, cond: unet.eval()(x, t).sample, "eps", schedule=schedule)
    data = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    x0, _ = data.batch(torch.randperm(len(data), generator=g)[:n])  # the items checkpoint_nll measures
    rows.append({"recipe": "diffusers", "method": "vlb", **vlb_bits_per_dim(denoiser, x0, schedule, 17, generator=g)})
    rows.append({"recipe": "diffusers", "method": "ode", **ode_bits_per_dim(
        denoiser, x0, 17, sigma_min=schedule.sigma_min, sigma_max=schedule.sigma_max, steps=32, generator=g)})
    (work / "nll.json").write_text(json.dumps(rows, indent=1))
    print("| recipe | steps | method | bits/dim |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {step} | {r['method']} | {r['bits_per_dim']:.3f} +- {r['bits_per_dim_sem']:.3f} |")


def report(args) -> None:
    work = Path(args.work)
    results = json.loads((work / "results.json").read_text())
    print(f"digits, n = {args.n} samples per row against all 1,797 digits; {machine()}, {args.threads} thread(s), "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| recipe | steps | train time | sampler | sampling time | FD | KID | precision | recall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in sorted(results, key=lambda r: (r["step"], r["recipe"], r["sampler"])):
        print(f"| {r['recipe']} | {r['step']} | {r['train_seconds'] / 60:.1f} min | {r['sampler']} | "
              f"{r['sample_seconds']:.0f} s | {r['fd']:.2f} | {r['kid']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["train-unmix", "train-diffusers", "evaluate", "nll", "report"])
    p.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=STEPS,
                   help="comma-separated optimizer steps to checkpoint and measure")
    p.add_argument("--total-steps", type=int, default=max(STEPS),
                   help="diffusers: the run length its cosine decay is planned for (stop early with --steps)")
    p.add_argument("--n", type=int, default=1000, help="samples per measurement")
    p.add_argument("--n-nll", type=int, default=128, help="digits measured by `nll`")
    p.add_argument("--max-nfe", type=int, default=1000, help="skip samplers above this NFE (the DDPM column is slow)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/time_to_quality")
    args = p.parse_args()
    commands = {"train-unmix": train_unmix, "train-diffusers": train_diffusers, "evaluate": evaluate_all,
                "nll": likelihoods, "report": report}
    commands[args.command](args)


if __name__ == "__main__":
    main()
