"""Digits, unmix's default recipe against the diffusers training recipe, side by side: time to quality,
bits/dim and throughput.

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
    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py nll          # bits/dim of the last checkpoints
    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py throughput   # images/s, FLOPs, sampler cost
    python benchmarks/time_to_quality.py report          # markdown table from the JSON
    python benchmarks/time_to_quality.py --smoke         # every command at toy size in a temporary folder

Training writes checkpoints under --work and the seconds per step; `evaluate` measures whatever checkpoints
exist, so a run cut short still reports the steps it reached. The diffusers checkpoints are the DDPMPipeline
folders a diffusers user has (WORK/diffusers/pipeline-STEP), which benchmarks/diffusers_digits.py samples.

`throughput` measures images/s for one training step (unmix: unmix.training.trainer.train_step, i.e. loss,
backward, clipping, AdamW, EMA; diffusers: the recipe's step) and for one network evaluation; FLOPs per image
from torch.utils.flop_counter; achieved FLOP/s as a fraction of this machine's float32 matmul FLOP/s; and the
samplers' own cost per step beyond the network (unmix's default sampler vs diffusers' DPM-Solver++ multistep).
The candidates are timed in interleaved rounds and the median round is kept, so background load hits both.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import unmix
from unmix.data import load_dataset
from unmix.distributed import Dist, machine
from unmix.metrics import evaluate
from unmix.nets import build_net
from unmix.samplers import DEFAULT_SAMPLER, sample
from unmix.training import trainer
from unmix.training.config import TrainConfig
from unmix.training.log import StepStats

STEPS = (1000, 2000, 5000, 10000)
DIFFUSERS_SAMPLERS = {"DPM-Solver++ 2M, NFE 20": ("dpmsolver", 20), "DDPM, NFE 1000 (recommended)": ("ddpm", 1000)}


# -- the diffusers recipe ----------------------------------------------------------------------------
def diffusers_unet():
    """UNet2DModel for 1x8x8 at unmix's digits size: widths 32/64/64, attention at 4x4 and 2x2 like unmix."""
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=2,
                       block_out_channels=(32, 64, 64),
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"))


class DiffusersRecipe:
    """One training step of the diffusers example."""

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

    def save_pipeline(self, folder: Path, info: dict) -> None:
        """The EMA weights as a DDPMPipeline folder (written aside, then renamed), with `info` beside them."""
        from diffusers import DDPMPipeline

        self.ema.store(self.unet.parameters())
        self.ema.copy_to(self.unet.parameters())
        tmp = folder.with_name(f".{folder.name}-{os.getpid()}")
        DDPMPipeline(unet=self.unet, scheduler=self.scheduler).save_pretrained(tmp)
        self.ema.restore(self.unet.parameters())
        (tmp / "unmix_benchmark.json").write_text(json.dumps(info) + "\n")
        os.replace(tmp, folder)


@torch.no_grad()
def diffusers_sample(folder: Path, kind: str, steps: int, n: int, seed: int = 0, batch: int = 500) -> torch.Tensor:
    """n samples of a pipeline folder as a diffusers user draws them: DDPMPipeline, with DPM-Solver++(2M) in place
    of its DDPM scheduler for kind "dpmsolver"."""
    from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

    pipe = DDPMPipeline.from_pretrained(folder)
    if kind == "dpmsolver":
        pipe.scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++",
                                                     solver_order=2)
    pipe.set_progress_bar_config(disable=True)
    out = [pipe(batch_size=min(batch, n - lo), generator=torch.Generator().manual_seed(seed + lo),
                num_inference_steps=steps, output_type="np").images for lo in range(0, n, batch)]
    return torch.cat([torch.from_numpy(x).permute(0, 3, 1, 2) * 2 - 1 for x in out])


def pipeline_folder(work: Path, step: int) -> Path:
    return work / "diffusers" / f"pipeline-{step:08d}"


# -- training ------------------------------------------------------------------------------------------
def train_unmix(args) -> None:
    from unmix.store.checkpoint import list_checkpoints

    out = Path(args.work) / "unmix"
    every = math.gcd(*args.steps)
    runtime = dict(steps=max(args.steps), threads=args.threads, checkpoint_every=every, keep=max(args.steps) // every)
    if list_checkpoints(out):  # a run cut short continues where it stopped (a shorter earlier run kept fewer)
        run = trainer.resume(out, **runtime)
    else:
        run = trainer.start(TrainConfig(data="digits", out=str(out), sample_every=max(args.steps), log_every=100,
                                        **runtime))
    run.train(progress=not args.smoke)


def train_diffusers(args) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    (work / "diffusers").mkdir(parents=True, exist_ok=True)
    data = load_dataset("digits")
    x_all, _ = data.batch(torch.arange(len(data)))
    total = max(args.total_steps, max(args.steps))  # cosine decay planned over the whole run
    recipe = DiffusersRecipe(total)
    order = torch.randperm(len(x_all), generator=recipe.gen)
    pos, seconds, cpu, log = 0, 0.0, 0.0, []
    for step in range(1, max(args.steps) + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        if pos + 64 > len(order):  # a shuffled DataLoader, last partial batch dropped
            order, pos = torch.randperm(len(x_all), generator=recipe.gen), 0
        loss = recipe.step(x_all[order[pos:pos + 64]])
        pos += 64
        seconds, cpu = seconds + time.perf_counter() - start, cpu + time.process_time() - start_cpu
        if step % 100 == 0 or step in args.steps:
            log.append({"step": step, "loss": loss, "seconds": round(seconds, 2)})
        if step in args.steps:
            recipe.save_pipeline(pipeline_folder(work, step), {"steps": step, "total_steps": total,
                                                               "train_seconds": round(seconds, 1),
                                                               "train_cpu_seconds": round(cpu, 1),
                                                               "threads": args.threads})
            (work / "diffusers" / "stats.json").write_text(json.dumps(log, indent=1))
            print(f"diffusers recipe: step {step}, {seconds:.0f} s -> {pipeline_folder(work, step)}", flush=True)


# -- measuring -----------------------------------------------------------------------------------------
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
                model = unmix.load(ckpt)
                start = time.perf_counter()
                x = model.sample(args.n, seed=0, nfe=nfe, batch_size=500)
                record("unmix", step, label, unmix_seconds.get(step, math.nan), x, time.perf_counter() - start)
    for step in args.steps:
        folder = pipeline_folder(work, step)
        for label, (kind, nfe) in DIFFUSERS_SAMPLERS.items():
            if nfe > args.max_nfe or not folder.exists() or ("diffusers", step, label) in done:
                continue
            seconds = json.loads((folder / "unmix_benchmark.json").read_text())["train_seconds"]
            start = time.perf_counter()
            x = diffusers_sample(folder, kind, nfe, args.n)
            record("diffusers", step, label, seconds, x, time.perf_counter() - start)


def likelihoods(args) -> None:
    """Bits/dim of both recipes' last checkpoints on the same seeded digits (unmix.api.nll's choice of items):
    unmix's (continuous-time) by the probability-flow ODE, the diffusers model (discrete-time) by DDPM's VLB and by
    the ODE."""
    from diffusers import UNet2DModel

    from unmix.denoiser import NetworkDenoiser
    from unmix.likelihood import ode_bits_per_dim, vlb_bits_per_dim
    from unmix.schedules import DiscreteSchedule

    torch.set_num_threads(args.threads)
    work, step, n = Path(args.work), max(args.steps), args.n_nll
    rows = [{"recipe": "unmix", "method": "ode",
             **unmix.nll(work / "unmix" / f"checkpoint-{step:08d}", "ode", n, steps=32)}]
    unet = UNet2DModel.from_pretrained(pipeline_folder(work, step) / "unet").eval()
    schedule = DiscreteSchedule.linear()
    denoiser = NetworkDenoiser(lambda x, t, cond: unet(x, t).sample, "eps", schedule=schedule)
    data = load_dataset("digits")
    g = torch.Generator().manual_seed(0)
    x0, _ = data.batch(torch.randperm(len(data), generator=g)[:n])  # the items unmix.nll measures
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


# -- throughput ------------------------------------------------------------------------------------------
def flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def interleaved(candidates: dict, rounds: int, iters: int) -> dict[str, float]:
    """Median seconds per call of each candidate, timed in alternating rounds after one warm-up round."""
    times = {k: [] for k in candidates}
    for r in range(rounds + 1):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            if r:
                times[name].append((time.perf_counter() - start) / iters)
    return {k: statistics.median(v) for k, v in times.items()}


def unmix_candidate(batch: int, work: Path):
    """(net, train step, network call) of `unmix train --data digits` at this batch: the trainer's own step."""
    run = trainer.start(TrainConfig(data="digits", batch_size=batch, device="cpu", out=str(work / "throughput-unmix")))
    state = trainer.TrainState.fresh(build_net(run.net_config), run.config)
    stats, d = StepStats("cpu"), Dist()
    denoiser = run.recipe.denoiser(state.net)
    x, sigma = torch.randn(batch, *run.dataset.shape, generator=torch.Generator().manual_seed(0)), torch.ones(batch)

    def step():
        trainer.train_step(state, state.net, run.objective, run.dataset, run.config, d, stats)

    return state.net, step, torch.no_grad()(lambda: denoiser(x, sigma))


def diffusers_candidate(batch: int):
    """(net, train step, network call) of the diffusers recipe at this batch."""
    recipe = DiffusersRecipe(total_steps=10**6)
    x0, _ = load_dataset("digits").batch(torch.arange(batch))
    x, t = torch.randn(x0.shape), torch.full((batch,), 500)
    return recipe.unet, lambda: recipe.step(x0), torch.no_grad()(lambda: recipe.unet(x, t))


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


def throughput(args) -> None:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, work = args.batch, Path(args.work)
    nets, train, call = zip(unmix_candidate(B, work), diffusers_candidate(B))
    names = ("unmix", "diffusers")
    size = {k: sum(p.numel() for p in net.parameters()) for k, net in zip(names, nets)}
    fwd = {k: flops(fn) / B for k, fn in zip(names, call)}
    step = {k: flops(fn) / B for k, fn in zip(names, train)}
    evals = interleaved(dict(zip(names, call)), args.rounds, 5)
    trains = interleaved(dict(zip(names, train)), args.rounds, 3)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    peak = 2 * 1024**3 / interleaved({"mm": lambda: a @ b}, args.rounds, 5)["mm"]
    overhead = sampler_overhead(B, 20, args.rounds)
    rows = {k: {
        "parameters": size[k], "forward_mflop_per_image": fwd[k] / 1e6, "train_mflop_per_image": step[k] / 1e6,
        "eval_images_per_s": B / evals[k], "train_images_per_s": B / trains[k],
        "eval_flops_fraction_of_matmul": fwd[k] * B / evals[k] / peak,
        "train_flops_fraction_of_matmul": step[k] * B / trains[k] / peak,
        "sampler_overhead_ms_per_step": overhead[k] * 1e3, "sampler_overhead_fraction_of_eval": overhead[k] / evals[k],
    } for k in names}
    result = {"rows": rows, "matmul_gflops": peak / 1e9, "threads": args.threads, "batch": B,
              "date": time.strftime("%Y-%m-%d"), "machine": machine()}
    work.mkdir(parents=True, exist_ok=True)
    (work / "throughput.json").write_text(json.dumps(result, indent=2) + "\n")
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


COMMANDS = {"train-unmix": train_unmix, "train-diffusers": train_diffusers, "evaluate": evaluate_all,
            "nll": likelihoods, "throughput": throughput, "report": report}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", choices=list(COMMANDS))
    p.add_argument("--steps", type=lambda s: tuple(int(v) for v in s.split(",")), default=STEPS,
                   help="comma-separated optimizer steps to checkpoint and measure")
    p.add_argument("--total-steps", type=int, default=max(STEPS),
                   help="diffusers: the run length its cosine decay is planned for (stop early with --steps)")
    p.add_argument("--n", type=int, default=1000, help="samples per measurement")
    p.add_argument("--n-nll", type=int, default=128, help="digits measured by `nll`")
    p.add_argument("--max-nfe", type=int, default=1000, help="skip samplers above this NFE (the DDPM column is slow)")
    p.add_argument("--batch", type=int, default=64, help="throughput: images per call")
    p.add_argument("--rounds", type=int, default=7, help="throughput: interleaved timing rounds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", default="runs/time_to_quality")
    p.add_argument("--smoke", action="store_true", help="every command at toy size in a temporary folder (CI)")
    args = p.parse_args()
    if not args.smoke:
        if args.command is None:
            p.error(f"give a command ({', '.join(COMMANDS)}) or --smoke")
        return COMMANDS[args.command](args)
    with tempfile.TemporaryDirectory() as tmp:  # the DDPM column (1000 NFE) is left out
        args.work, args.steps, args.total_steps, args.n, args.n_nll, args.max_nfe = tmp, (2, 4), 4, 70, 4, 20
        args.batch, args.rounds, args.threads = 8, 1, 1
        for fn in COMMANDS.values():
            fn(args)


if __name__ == "__main__":
    main()
