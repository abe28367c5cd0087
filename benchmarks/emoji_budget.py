"""Emoji on a fixed CPU budget: which recipe learns the most in M minutes on one core?

Each unmix candidate is the `unmix train --data emoji` command with some flags (`latent`: the pixel preset's
rival, `unmix train --data emoji --latent`, both stages inside the minutes); each is trained for --minutes of
wall clock at one thread through the CLI (as a user would), then measured by FD / precision / recall in the
emoji feature space (500 samples, the default sampler at 32 NFE, seed 0) and sampled as a 64-image grid. The `diffusers`
candidate is the recipe a diffusers user would write (benchmarks/diffusers_emoji.py), trained and measured the
same way (DPM-Solver++(2M), 32 network calls) and kept as a DDPMPipeline folder (NAME-Mmin/pipeline/). Two
candidates train side by side, one per core (the flock slots keep heavier jobs out); results go to
runs/emoji_budget/NAME-Mmin/:

    flock /tmp/unmix-slotA.lock python benchmarks/emoji_budget.py train patch64 --minutes 30
    flock /tmp/unmix-slotB.lock python benchmarks/emoji_budget.py train latent --minutes 30
    python benchmarks/emoji_budget.py measure patch64 runs/my-run   # a run trained by hand with those flags
    python benchmarks/emoji_budget.py resample-diffusers --minutes 30   # its network, unmix's sampler, x0 clipped
    python benchmarks/emoji_budget.py report        # table from runs/emoji_budget/*/result.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CANDIDATES = {
    # the preset until 2026-11-22: 32 channels at 32, 16, 8 and 4 pixels
    "fullres32": ["--patch", "1", "--channels", "32", "--channel-mult", "1,2,2,2", "--attn", "2,3"],
    # today's preset: 2x2 patches folded into channels, 64 channels at 16, 8 and 4 pixels
    "patch64": [],
    "patch64-cond": ["--cond", "label"],
    # latent diffusion, both stages inside the minutes: the neighbours' guess on (the default) and off
    "latent": ["--latent", "--neighbours"],
    "latent-plain": ["--latent", "--no-neighbours"],
    "diffusers": [],  # not unmix: benchmarks/diffusers_emoji.py
}
ROOT = Path("runs/emoji_budget")
GUIDANCE = 2.0  # class-conditional candidates are also measured guided at this scale


def train(name: str, minutes: float) -> None:
    if name == "diffusers":
        return train_diffusers(minutes)
    out = ROOT / f"{name}-{minutes:g}min" / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "unmix", "train", "--data", "emoji", "--out", str(out), "--minutes",
                    str(minutes), "--threads", "1", "--sample-every", "1000000", "--checkpoint-every", "1000000",
                    *CANDIDATES[name]], check=True, env=env)
    measure(name, out, minutes)


def train_diffusers(minutes: float) -> None:
    import torch

    torch.set_num_threads(1)
    from diffusers_emoji import sample, save_pipeline
    from diffusers_emoji import train as train_unet

    from unmix.api import save_grid
    from unmix.data import load_dataset
    from unmix.metrics.quality import evaluate

    ds = load_dataset("emoji")
    unet, steps = train_unet(ds.batch(torch.arange(len(ds)))[0], minutes, log=lambda s: print(s, flush=True))
    out = ROOT / f"diffusers-{minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    save_pipeline(unet, out / "pipeline")  # before the long sampling; `unmix sample` reads it (with clip_sample)
    x = sample(unet, 500)
    save_grid(x[:64], out / "grid.png", nrow=8)
    result = {"name": "diffusers", "run": "benchmarks/diffusers_emoji.py", "flags": [], "minutes": minutes,
              "steps": steps, "images": steps * 16, "parameters": sum(p.numel() for p in unet.parameters()),
              **evaluate(x, "emoji", 0), **nearest(x), "data": "emoji", "sampler": "dpmsolver++(2M)", "nfe": 32}
    write_result(out, result)


def measure(name: str, run: Path, minutes: float) -> None:
    """FD and friends of a run trained with the candidate's flags (by `train`, or by hand), and its grid."""
    import torch

    torch.set_num_threads(1)
    from unmix.api import load, save_grid
    from unmix.data import load_dataset
    from unmix.metrics.quality import evaluate
    from unmix.samplers import DEFAULT_SAMPLER
    from unmix.store.checkpoint import open_checkpoint

    model = load(run)  # a run folder loads its latest checkpoint
    stored = open_checkpoint(model.checkpoint)  # config only: the weights are already loaded
    step, batch = stored.step, stored.config["train"]["batch_size"]
    x = model.sample(500, seed=0, nfe=32)
    metrics = {**evaluate(x, "emoji", 0), **nearest(x), "data": "emoji", "sampler": DEFAULT_SAMPLER, "nfe": 32}
    folder = ROOT / f"{name}-{minutes:g}min"
    folder.mkdir(parents=True, exist_ok=True)
    save_grid(model.sample(64, seed=0), folder / "grid.png", nrow=8)
    result = {"name": name, "run": str(run), "flags": CANDIDATES[name], "minutes": minutes, "steps": step,
              "images": step * batch, "parameters": sum(p.numel() for p in model.net.parameters()), **metrics}
    if model.num_classes:  # also guided, with labels drawn at the dataset's group frequencies
        labels = load_dataset("emoji").labels
        pick = labels[torch.randint(len(labels), (500,), generator=torch.Generator().manual_seed(0))]
        guided = evaluate(model.sample(500, seed=0, nfe=32, labels=pick, guidance=GUIDANCE), "emoji", 0)
        result.update({f"guided_{k}": v for k, v in guided.items()}, guidance=GUIDANCE)
    write_result(folder, result)


def resample_diffusers(minutes: float) -> None:
    """The diffusers row's saved network sampled by unmix: the default sampler at 32 NFE on the pipeline folder,
    which keeps the DDPMScheduler's clip_sample (x0 clamped to [-1, 1]), so the row measures the network rather
    than diffusers' unclipped DPM-Solver++. Written to diffusers-unmix-sampler-Mmin/."""
    import torch

    torch.set_num_threads(1)
    from unmix.api import load, save_grid
    from unmix.metrics.quality import evaluate
    from unmix.samplers import DEFAULT_SAMPLER

    trained = ROOT / f"diffusers-{minutes:g}min"
    model = load(trained / "pipeline")
    x = model.sample(500, seed=0, nfe=32)
    folder = ROOT / f"diffusers-unmix-sampler-{minutes:g}min"
    folder.mkdir(parents=True, exist_ok=True)
    save_grid(x[:64], folder / "grid.png", nrow=8)
    result = {**json.loads((trained / "result.json").read_text()), "run": str(trained / "pipeline"),
              **evaluate(x, "emoji", 0), **nearest(x), "sampler": f"{DEFAULT_SAMPLER} (unmix, x0 clipped)", "nfe": 32}
    write_result(folder, result)


def write_result(folder: Path, result: dict) -> None:
    """The row's result.json (what `report` reads), also printed."""
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def nearest(x, leave_one_out: bool = False) -> dict:
    """How close samples [N, 3, 32, 32] come to copying training emoji: the PSNR (pixels in [-1, 1]) to the nearest
    training picture, its median and the shares above 20 and 25 dB. `leave_one_out` (x None): the training emoji
    themselves, each against the others (the reference: how near distinct emoji are to each other)."""
    import torch

    from unmix.data import load_dataset

    ds = load_dataset("emoji")
    train = ds.batch(torch.arange(len(ds)))[0].flatten(1)
    x = train if leave_one_out else x.flatten(1).float()
    mse = torch.cdist(x, train).clamp_min(0) ** 2 / train.shape[1]
    if leave_one_out:
        mse.fill_diagonal_(float("inf"))
    psnr = 10 * torch.log10(4 / mse.min(1).values.clamp_min(1e-10))
    return {"nearest_psnr_median": psnr.median().item(), "nearest_over_20db": (psnr > 20).float().mean().item(),
            "nearest_over_25db": (psnr > 25).float().mean().item()}


def report() -> None:
    rows = [{**json.loads(p.read_text()), "folder": p.parent.name} for p in sorted(ROOT.glob("*/result.json"))]
    print("| result folder | flags | parameters | minutes | steps | FD | precision | recall | nearest emoji: median, > 20 dB "
          "| guided FD / P / R |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        guided = (f"{r['guided_fd']:.1f} / {r['guided_precision']:.2f} / {r['guided_recall']:.2f} (scale {r['guidance']:g})"
                  if "guided_fd" in r else "")
        copies = (f"{r['nearest_psnr_median']:.1f} dB, {r['nearest_over_20db']:.0%}" if "nearest_psnr_median" in r
                  else "not measured")
        print(f"| {r['folder']} | `{' '.join(r['flags']) or '(preset)'}` | {r['parameters'] / 1e6:.2f}M | {r['minutes']:g} | "
              f"{r['steps']} | {r['fd']:.1f} | {r['precision']:.2f} | {r['recall']:.2f} | {copies} | {guided} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("name", choices=sorted(CANDIDATES))
    t.add_argument("--minutes", type=float, default=30.0)
    m = sub.add_parser("measure", help="measure a run already trained with a candidate's flags")
    m.add_argument("name", choices=sorted(CANDIDATES))
    m.add_argument("run", type=Path)
    m.add_argument("--minutes", type=float, default=30.0)
    d = sub.add_parser("resample-diffusers", help="sample a saved diffusers row with unmix's sampler (x0 clipped)")
    d.add_argument("--minutes", type=float, default=30.0)
    sub.add_parser("report")
    sub.add_parser("nearest", help="the reference for the nearest-picture columns: each real emoji against the others")
    args = parser.parse_args()
    if args.cmd == "train":
        train(args.name, args.minutes)
    elif args.cmd == "measure":
        measure(args.name, args.run, args.minutes)
    elif args.cmd == "resample-diffusers":
        resample_diffusers(args.minutes)
    elif args.cmd == "nearest":
        print(json.dumps(nearest(None, leave_one_out=True)))
    else:
        report()
