"""A diffusers-trained digits model, sampled by unmix (read from its pipeline folder) and by diffusers itself.

The model: the diffusers recipe of benchmarks/time_to_quality.py (UNet2DModel of 1.71 M parameters,
DDPMScheduler with 1000 linear steps, eps prediction, AdamW with warm-up and cosine decay, EMA, batch 64),
trained there for 1,000 optimizer steps at one thread and saved with DDPMPipeline.save_pretrained, i.e. the
folder a diffusers user has. unmix reads that folder with `unmix.load` (unmix.adapters.diffusers_folder:
clip_sample from its scheduler config, as DDPMPipeline does; rows marked "no clip" switch it off, as
DPMSolverMultistepScheduler has no clipping) and samples it at NFE 10 and 20; diffusers samples the same network
with DDPMPipeline at 1000 steps and with DPM-Solver++(2M) in place of its scheduler at 20 (and 10). FD etc. from
unmix.metrics.quality against all 1,797 digits.

    flock /tmp/unmix-heavy.lock python benchmarks/time_to_quality.py train-diffusers --steps 1000 --total-steps 1000 \
        --threads 1 --work runs/diffusers_digits                               # the folder: diffusers/pipeline-00001000
    flock /tmp/unmix-heavy.lock python benchmarks/diffusers_digits.py sample     # repeat until done
    python benchmarks/diffusers_digits.py report                                # markdown table
    python benchmarks/diffusers_digits.py --smoke      # both commands on an untrained toy pipeline, in a temporary folder

`sample` stops after --minutes (so no invocation runs long on a shared machine) and continues where it stopped
when run again: it draws every row in chunks of --chunk images, saving each with its wall and CPU seconds. Times
are reported as CPU seconds (process time), which a busy machine inflates less than wall time. The 1000-step
DDPM row (1000 network calls per image) draws --n-slow samples; every row is also measured on its first
--n-slow, so that column compares all rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import unmix
from unmix.distributed import machine
from unmix.metrics import evaluate

# row name -> (library, sampler, NFE, unmix schedule overrides)
ROWS = {
    "unmix iPNDM (default), NFE 10": ("unmix", "ipndm", 10, None),
    "unmix iPNDM (default), NFE 20": ("unmix", "ipndm", 20, None),
    "unmix DPM-Solver++(2M), NFE 10": ("unmix", "dpmpp_2m", 10, None),
    "unmix DPM-Solver++(2M), NFE 20": ("unmix", "dpmpp_2m", 20, None),
    "unmix DPM-Solver++(2M) no clip, NFE 10": ("unmix", "dpmpp_2m", 10, {"clip_sample": False}),
    "unmix DPM-Solver++(2M) no clip, NFE 20": ("unmix", "dpmpp_2m", 20, {"clip_sample": False}),
    "unmix DDPM (ancestral), NFE 20": ("unmix", "ddpm", 20, None),
    "unmix DDPM (ancestral), NFE 100": ("unmix", "ddpm", 100, None),
    "diffusers DPM-Solver++(2M), NFE 10": ("diffusers", "dpmsolver", 10, None),
    "diffusers DPM-Solver++(2M), NFE 20": ("diffusers", "dpmsolver", 20, None),
    "diffusers DDPM, NFE 1000 (its recommended)": ("diffusers", "ddpm", 1000, None),
}
PIPELINE = "runs/diffusers_digits/diffusers/pipeline-00001000"


def _sampler(row: str, folder: Path, cache: dict):
    """f(lo, size) -> samples lo .. lo + size - 1 of a row; the model is read once, outside the timed calls."""
    library, sampler, nfe, schedule = ROWS[row]
    if library == "unmix":
        if row not in cache:
            cache[row] = unmix.load(folder, schedule=schedule)
        model = cache[row]
        return lambda lo, size: model.sample(size, seed=lo, sampler=sampler, nfe=nfe, batch_size=size)
    if sampler not in cache:  # DDPMPipeline as saved, or with DPM-Solver++(2M) in place of its DDPM scheduler
        from diffusers import DDPMPipeline, DPMSolverMultistepScheduler

        pipe = DDPMPipeline.from_pretrained(folder)
        if sampler == "dpmsolver":
            pipe.scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++",
                                                         solver_order=2)
        pipe.set_progress_bar_config(disable=True)
        cache[sampler] = pipe
    pipe = cache[sampler]
    return lambda lo, size: torch.from_numpy(pipe(batch_size=size, generator=torch.Generator().manual_seed(lo),
                                                  num_inference_steps=nfe, output_type="np").images
                                             ).permute(0, 3, 1, 2) * 2 - 1


def _slug(row: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", row).strip("-")


def _target(row: str, args) -> int:
    """Samples a row draws: --n, or --n-slow for the 1000-step DDPM (1000 network calls per image)."""
    return args.n if ROWS[row][2] <= 100 else args.n_slow


def sample(args) -> None:
    torch.set_num_threads(args.threads)
    work, folder = Path(args.work), Path(args.pipeline)
    if not folder.is_dir():
        raise SystemExit(f"no {folder}: train it with benchmarks/time_to_quality.py train-diffusers (see above)")
    chunks = work / "chunks"
    chunks.mkdir(parents=True, exist_ok=True)
    deadline, cache = time.monotonic() + args.minutes * 60, {}
    rows = [r for r in ROWS if not args.rows or any(k.lower() in r.lower() for k in args.rows)]
    for lo in range(0, args.n, args.chunk):  # round-robin over rows: every row advances under the same load
        for row in rows:
            path = chunks / f"{_slug(row)}-{lo:06d}.npz"
            if path.exists() or lo >= _target(row, args):
                continue
            if time.monotonic() > deadline:
                print("time budget spent; run `sample` again to continue", flush=True)
                return
            size = min(args.chunk, _target(row, args) - lo)
            draw = _sampler(row, folder, cache)
            wall, cpu = time.perf_counter(), time.process_time()
            with torch.no_grad():
                x = draw(lo, size)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, x=x.float().clamp(-1, 1).numpy(), seconds=wall, cpu_seconds=cpu)
            os.replace(tmp, path)
            print(f"{row}: images {lo}..{lo + size - 1} in {wall:.1f} s ({cpu:.1f} CPU s)", flush=True)
    print("all rows sampled; run `report`")


def report(args) -> None:
    """FD/KID of every row on its first --n-slow samples (one column for all rows), and FD on --n where drawn."""
    work = Path(args.work)
    meta = json.loads((Path(args.pipeline) / "unmix_benchmark.json").read_text())
    results = {}
    for row in ROWS:
        loaded = [np.load(p) for p in sorted((work / "chunks").glob(f"{_slug(row)}-*.npz"))]
        x = torch.from_numpy(np.concatenate([z["x"] for z in loaded])) if loaded else torch.zeros(0)
        if len(x) < _target(row, args):
            print(f"{row}: {len(x)} of {_target(row, args)} samples so far; skipped")
            continue
        cpu = sum(float(z["cpu_seconds"]) for z in loaded) / len(x) * 1000
        wall = sum(float(z["seconds"]) for z in loaded) / len(x) * 1000
        results[row] = {"few": evaluate(x[:args.n_slow], "digits"), "all": evaluate(x, "digits") if len(x) >= args.n
                        else None, "cpu_seconds_per_1000": cpu, "wall_seconds_per_1000": wall}
    (work / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"digits; a diffusers DDPMPipeline trained {meta['steps']} steps ({meta['train_cpu_seconds'] / 60:.1f} CPU "
          f"min at {meta['threads']} thread); FD/KID against all 1,797 digits; {machine()}, sampling at "
          f"{args.threads} thread(s), {time.strftime('%Y-%m-%d')}\n")
    print(f"| sampler | NFE | FD ({args.n_slow}) | KID ({args.n_slow}) | FD ({args.n}) | precision / recall ({args.n}) "
          f"| CPU seconds per 1000 images |")
    print("|---|---|---|---|---|---|---|")
    for row, r in results.items():
        name, nfe = row.rsplit(", NFE ", 1)
        a = r["all"]
        full = f"{a['fd']:.2f} | {a['precision']:.3f} / {a['recall']:.3f}" if a else "- | -"
        print(f"| {name} | {nfe} | {r['few']['fd']:.2f} | {r['few']['kid']:.2f} | {full} | "
              f"{r['cpu_seconds_per_1000']:.0f} |")


def toy_pipeline(folder: Path) -> None:
    """An untrained DDPMPipeline of a small UNet2DModel for digits, with the record the report reads: the smoke's
    stand-in for a trained folder."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1, block_out_channels=(8, 16),
                       norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(folder)
    (folder / "unmix_benchmark.json").write_text(json.dumps({"steps": 0, "train_cpu_seconds": 0.0, "threads": 1}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", choices=["sample", "report"])
    p.add_argument("--pipeline", default=PIPELINE, help="the diffusers pipeline folder to sample")
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--n-slow", type=int, default=250, help="samples for the 1000-step DDPM row (all rows are also "
                   "measured on their first N_SLOW)")
    p.add_argument("--chunk", type=int, default=100, help="samples drawn (and saved) at a time")
    p.add_argument("--rows", nargs="*", help="only rows whose name contains one of these words")
    p.add_argument("--minutes", type=float, default=8.0, help="`sample` stops after this long (rerun it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/diffusers_digits")
    p.add_argument("--smoke", action="store_true", help="sample (the 1000-step row left out) and report a toy "
                   "pipeline in a temporary folder (CI)")
    args = p.parse_args()
    if not args.smoke:
        if args.command is None:
            p.error("give a command (sample, report) or --smoke")
        return {"sample": sample, "report": report}[args.command](args)
    if importlib.util.find_spec("diffusers") is None:
        return print("smoke skipped: diffusers is not installed (pip install -e .[bench])")
    with tempfile.TemporaryDirectory() as tmp:
        args.work, args.pipeline, args.n, args.n_slow, args.chunk = tmp, Path(tmp) / "pipeline", 70, 70, 35
        args.rows, args.threads = ["unmix", "DPM-Solver"], 1
        toy_pipeline(args.pipeline)
        sample(args)
        report(args)


if __name__ == "__main__":
    main()
