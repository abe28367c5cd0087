"""A diffusers-trained digits model, sampled by unmix (read from its pipeline folder) and by diffusers itself.

The model: the diffusers recipe of benchmarks/time_to_quality.py (UNet2DModel of 1.71 M parameters,
DDPMScheduler with 1000 linear steps, eps prediction, AdamW with warm-up and cosine decay, EMA, batch 64),
trained for --steps optimizer steps at one thread and saved with DDPMPipeline.save_pretrained, i.e. the
folder a diffusers user has. unmix reads that folder with unmix.adapters.diffusers_folder (clip_sample from its
scheduler config, as DDPMPipeline does; rows marked "no clip" switch it off, as DPMSolverMultistepScheduler
has no clipping) and samples it at NFE 10 and 20; diffusers samples the same network with its DDPM at
1000 steps and DPM-Solver++(2M) at 20 (and 10). FD etc. from unmix.metrics.quality against all 1,797 digits.

    flock /tmp/unmix-heavy.lock python benchmarks/diffusers_digits.py train      # repeat until it saves the folder
    flock /tmp/unmix-heavy.lock python benchmarks/diffusers_digits.py sample     # repeat until done
    python benchmarks/diffusers_digits.py report                                # markdown table

Both `train` and `sample` stop after --minutes (so no invocation runs long on a shared machine) and continue
where they stopped when run again: `train` saves its whole state, `sample` draws every row in chunks of
--chunk images, saving each with its wall and CPU seconds. Times are reported as CPU seconds (process time),
which a busy machine inflates less than wall time. The 1000-step DDPM row (1000 network calls per image)
draws --n-slow samples; every row is also measured on its first --n-slow, so that column compares all rows.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from time_to_quality import DiffusersRecipe, diffusers_sample, machine  # noqa: E402

from unmix.adapters.diffusers_folder import read_diffusers_folder  # noqa: E402
from unmix.data import load_dataset  # noqa: E402
from unmix.metrics import evaluate  # noqa: E402
from unmix.model import Model  # noqa: E402
from unmix.store.checkpoint import flatten_state, unflatten_state  # noqa: E402

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


def _save_state(path: Path, recipe: DiffusersRecipe, order: torch.Tensor, pos: int, step: int, cpu: float) -> None:
    """The whole training state as safetensors + a JSON skeleton (unmix.store.checkpoint's format: nothing pickled)."""
    from safetensors.torch import save_file

    state = {"unet": recipe.unet.state_dict(), "ema": recipe.ema.state_dict(), "opt": recipe.opt.state_dict(),
             "lr": recipe.lr.state_dict(), "gen": recipe.gen.get_state(), "order": order, "pos": pos, "step": step,
             "cpu_seconds": cpu}
    tensors, skeleton = flatten_state(state)
    tmp = path.with_name(path.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, tmp / "state.safetensors")
    (tmp / "state.json").write_text(json.dumps(skeleton))
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _load_state(path: Path, recipe: DiffusersRecipe) -> tuple[torch.Tensor, int, int, float]:
    from safetensors.torch import load

    state = unflatten_state(json.loads((path / "state.json").read_text()),
                            load((path / "state.safetensors").read_bytes()))
    recipe.unet.load_state_dict(state["unet"])
    recipe.ema.load_state_dict(state["ema"])
    recipe.opt.load_state_dict(state["opt"])
    recipe.lr.load_state_dict(state["lr"])
    recipe.gen.set_state(state["gen"])
    return state["order"], state["pos"], state["step"], state["cpu_seconds"]


def train(args) -> None:
    """The diffusers recipe for args.steps steps (cosine decay planned over them), saved as a DDPMPipeline folder.

    Stops after --minutes with its full state saved (model, EMA, optimiser, schedule, data order, generator);
    run it again to continue, bit for bit as if uninterrupted."""
    from diffusers import DDPMPipeline

    torch.set_num_threads(args.threads)
    work = Path(args.work)
    folder, state_path = work / "pipeline", work / "train_state"
    if folder.exists():
        print(f"{folder} exists; delete it to train again")
        return
    data = load_dataset("digits")
    x_all, _ = data.batch(torch.arange(len(data)))
    recipe = DiffusersRecipe(args.steps)
    if state_path.exists():
        order, pos, done, cpu = _load_state(state_path, recipe)
    else:
        order, pos, done, cpu = torch.randperm(len(x_all), generator=recipe.gen), 0, 0, 0.0
    deadline = time.monotonic() + args.minutes * 60
    for step in range(done + 1, args.steps + 1):
        t0 = time.process_time()
        if pos + 64 > len(order):  # a shuffled DataLoader, last partial batch dropped
            order, pos = torch.randperm(len(x_all), generator=recipe.gen), 0
        loss = recipe.step(x_all[order[pos:pos + 64]])
        pos += 64
        cpu += time.process_time() - t0
        if step % 100 == 0:
            print(f"step {step}, loss {loss:.4f}, {cpu:.0f} CPU s", flush=True)
        if time.monotonic() > deadline and step < args.steps:
            _save_state(state_path, recipe, order, pos, step, cpu)
            print(f"time budget spent at step {step}; run `train` again to continue", flush=True)
            return
    recipe.ema.copy_to(recipe.unet.parameters())
    tmp = work / f".pipeline-{os.getpid()}"
    DDPMPipeline(unet=recipe.unet.eval(), scheduler=recipe.scheduler).save_pretrained(tmp)
    (tmp / "unmix_benchmark.json").write_text(json.dumps({"steps": args.steps, "train_cpu_seconds": round(cpu, 1),
                                                          "threads": args.threads}) + "\n")
    os.replace(tmp, folder)
    shutil.rmtree(state_path, ignore_errors=True)
    print(f"{args.steps} steps in {cpu / 60:.1f} CPU min -> {folder}")


def _sampler(row: str, folder: Path, cache: dict):
    """f(lo, size) -> samples lo .. lo + size - 1 of a row; the model is read once, outside the timed calls."""
    library, sampler, nfe, schedule = ROWS[row]
    if library == "unmix":
        if row not in cache:
            cache[row] = Model(*read_diffusers_folder(folder, schedule=schedule))
        model = cache[row]
        return lambda lo, size: model.sample(size, seed=lo, sampler=sampler, nfe=nfe, batch_size=size)
    if "unet" not in cache:
        from diffusers import UNet2DModel

        cache["unet"] = UNet2DModel.from_pretrained(folder / "unet").eval()
    unet = cache["unet"]
    return lambda lo, size: diffusers_sample(unet, sampler, nfe, size, seed=lo, batch=size)


def _slug(row: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", row).strip("-")


def _target(row: str, args) -> int:
    """Samples a row draws: --n, or --n-slow for the 1000-step DDPM (1000 network calls per image)."""
    return args.n if ROWS[row][2] <= 100 else args.n_slow


def sample(args) -> None:
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    folder = work / "pipeline"
    if not folder.is_dir():
        raise SystemExit(f"no {folder}: run `train` first")
    chunks = work / "chunks"
    chunks.mkdir(exist_ok=True)
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
    meta = json.loads((work / "pipeline" / "unmix_benchmark.json").read_text())
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", choices=["train", "sample", "report"])
    p.add_argument("--steps", type=int, default=1500, help="optimizer steps for `train`")
    p.add_argument("--n", type=int, default=1000, help="samples per row")
    p.add_argument("--n-slow", type=int, default=250, help="samples for the 1000-step DDPM row (all rows are also "
                   "measured on their first N_SLOW)")
    p.add_argument("--chunk", type=int, default=100, help="samples drawn (and saved) at a time")
    p.add_argument("--rows", nargs="*", help="only rows whose name contains one of these words")
    p.add_argument("--minutes", type=float, default=8.0, help="`train` / `sample` stop after this long (rerun them)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="runs/diffusers_digits")
    args = p.parse_args()
    {"train": train, "sample": sample, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
