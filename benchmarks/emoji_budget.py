"""Emoji on a fixed CPU budget: which recipe learns the most in M minutes on one core?

Two data sets: `--data emoji` (Noto only, the default) and the five styles, `--data emoji:styles=all:split=train`
(issue 31), whose candidates `local` (the five-style preset), `copying`, `whole-leave-out` and `pixel` are measured
against the held-out split too (FD to held-out pictures beside FD to training ones) and by the copy check:

    python benchmarks/emoji_budget.py --data emoji:styles=all:split=train --threads 2 --n 1000 train local --minutes 30

Each unmix candidate is the `unmix train --data emoji` command with some flags (`latent`: the pixel preset's
rival, `unmix train --data emoji --latent`, both stages inside the minutes); each is trained for --minutes of
wall clock at one thread through the CLI (as a user would), then measured by FD / precision / recall in the
emoji feature space (--n 500 samples, the default sampler at --nfe 32, seed 0) and sampled as a 64-image grid. The
`diffusers` candidate is the recipe a diffusers user would write (below), trained and measured the same way
(DPM-Solver++(2M), 32 network calls) and kept as a DDPMPipeline folder (NAME-Mmin/pipeline/). Two candidates
train side by side, one per core (the flock slots keep heavier jobs out); results go to
runs/emoji_budget/NAME-Mmin/:

    flock /tmp/unmix-slotA.lock python benchmarks/emoji_budget.py train patch64 --minutes 30
    flock /tmp/unmix-slotB.lock python benchmarks/emoji_budget.py train latent --minutes 30
    python benchmarks/emoji_budget.py measure patch64 runs/my-run   # a run trained by hand with those flags
    python benchmarks/emoji_budget.py resample-diffusers --minutes 30   # its network, unmix's sampler, x0 clipped
    python benchmarks/emoji_budget.py report        # table from runs/emoji_budget/*/result.json
    python benchmarks/emoji_budget.py --smoke       # every command at toy size in a temporary folder

The diffusers recipe, as diffusers' train_unconditional example sized down for 32 px and one CPU thread:
UNet2DModel with widths 64/128/128, two blocks per level and self-attention at 8x8 (6.5M parameters; the pixel
preset has 4.96M), DDPMScheduler with 1000 linear steps and epsilon prediction, MSE, AdamW at 1e-4 (betas
0.95/0.999, weight decay 1e-6) with 500 warm-up steps and then a constant rate (the example's cosine needs the
step count, which a time budget does not give), gradient clipping at 1, EMA as the example (0.9999 with warm-up),
batch 16. No flips (emoji are not mirror-symmetric). Sampled with DPMSolverMultistepScheduler (DPM-Solver++(2M))
at 32 steps, the same 32 network calls as unmix's rows.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

CANDIDATES = {
    # the preset until 2026-11-22: 32 channels at 32, 16, 8 and 4 pixels
    "fullres32": ["--patch", "1", "--channels", "32", "--channel-mult", "1,2,2,2", "--attn", "2,3"],
    # today's preset: 2x2 patches folded into channels, 64 channels at 16, 8 and 4 pixels
    "patch64": [],
    "patch64-cond": ["--cond", "label"],
    # latent diffusion, both stages inside the minutes: the neighbours' guess on (the default) and off
    "latent": ["--latent", "--neighbours"],
    "latent-plain": ["--latent", "--no-neighbours"],
    "diffusers": [],  # not unmix: the recipe below
    # five-style emoji (--data emoji:styles=all:split=train; issue 31): the preset (a net correcting the local
    # neighbours' guess), the copying mode, the whole-picture guess with the own picture left out, no guess at all
    "local": [],
    "copying": ["--reproduce-training-set", "--local-patch", "0"],
    "whole-leave-out": ["--neighbours", "--local-patch", "0"],
    "pixel": ["--no-neighbours"],
}
FIVE_STYLE_ONLY = ("local", "copying", "whole-leave-out", "pixel")
GUIDANCE = 2.0  # class-conditional candidates are also measured guided at this scale
BATCH = 16  # the diffusers recipe's
NFE = 32  # network calls per sample of every row (DPM-Solver++(2M) steps for the diffusers one)


# -- the diffusers candidate -------------------------------------------------------------------------------
def emoji_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(64, 128, 128),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def ddpm_scheduler():
    """The example's training noise schedule: 1000 linear steps, epsilon prediction, x0 clipped when sampling."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train_unet(images: torch.Tensor, minutes: float, seed: int = 0):
    """(EMA UNet2DModel, steps) after `minutes` of wall clock on images [N, 3, 32, 32] in [-1, 1]."""
    from diffusers import UNet2DModel
    from diffusers.optimization import get_constant_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    unet = emoji_unet()
    scheduler = ddpm_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr = get_constant_schedule_with_warmup(opt, num_warmup_steps=500)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                   model_cls=UNet2DModel, model_config=unet.config)
    g = torch.Generator().manual_seed(seed)
    start, step = time.monotonic(), 0
    while time.monotonic() - start < minutes * 60:
        x0 = images[torch.randint(0, len(images), (BATCH,), generator=g)]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (BATCH,), generator=g)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr.step()
        opt.zero_grad()
        ema.step(unet.parameters())
        step += 1
        if step % 200 == 0:
            print(f"diffusers step {step} loss {loss.item():.4f} ({(time.monotonic() - start) / 60:.1f} min)", flush=True)
    ema.copy_to(unet.parameters())
    return unet.eval(), step


@torch.no_grad()
def sample_unet(unet, n: int, steps: int, seed: int = 0, batch: int = 250) -> torch.Tensor:
    """n images in [-1, 1] with DPM-Solver++(2M) at `steps` steps, as a diffusers user samples."""
    from diffusers import DPMSolverMultistepScheduler

    out = []
    for lo in range(0, n, batch):
        sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                            algorithm_type="dpmsolver++", solver_order=2)
        sched.set_timesteps(steps)
        g = torch.Generator().manual_seed(seed + lo)
        x = torch.randn((min(batch, n - lo), 3, 32, 32), generator=g)
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)


def train_diffusers(root: Path, minutes: float, n: int, nfe: int, data: str = "emoji", threads: int = 1) -> None:
    from diffusers import DDPMPipeline

    from unmix.api import save_grid
    from unmix.data import load_dataset
    from unmix.metrics.quality import evaluate

    torch.set_num_threads(threads)
    ds = load_dataset(data)
    unet, steps = train_unet(ds.batch(torch.arange(len(ds)))[0], minutes)
    out = root / f"diffusers-{minutes:g}min"
    out.mkdir(parents=True, exist_ok=True)
    # before the long sampling: the folder a diffusers user has, which `unmix sample` reads (with clip_sample)
    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()).save_pretrained(out / "pipeline")
    x = sample_unet(unet, n, nfe)
    save_grid(x[:64], out / "grid.png", nrow=8)
    result = {"name": "diffusers", "run": "benchmarks/emoji_budget.py", "flags": [], "minutes": minutes,
              "steps": steps, "images": steps * BATCH, "parameters": sum(p.numel() for p in unet.parameters()),
              **evaluate(x, data, 0), **nearest(x, data), "data": data, "sampler": "dpmsolver++(2M)", "nfe": nfe}
    write_result(out, result)


# -- the unmix candidates ------------------------------------------------------------------------------------
def train(root: Path, name: str, minutes: float, n: int, nfe: int, data: str = "emoji", threads: int = 1) -> None:
    if name in FIVE_STYLE_ONLY and not data.startswith("emoji:"):
        raise SystemExit(f"candidate {name} is for the five-style data: add --data emoji:styles=all:split=train")
    if name == "diffusers":
        return train_diffusers(root, minutes, n, nfe, data, threads)
    out = root / f"{name}-{minutes:g}min" / "run"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    subprocess.run([sys.executable, "-m", "unmix", "train", "--data", data, "--out", str(out), "--minutes",
                    str(minutes), "--threads", str(threads), "--sample-every", "1000000", "--checkpoint-every",
                    "1000000", "--nfe", str(nfe), *CANDIDATES[name]], check=True, env=env)
    measure(root, name, out, minutes, n, nfe, threads)


def measure(root: Path, name: str, run: Path, minutes: float, n: int, nfe: int, threads: int = 1) -> None:
    """FD and friends of a run trained with the candidate's flags (by `train`, or by hand), and its grid."""
    from unmix.api import load, save_grid
    from unmix.data import load_dataset
    from unmix.metrics.quality import evaluate
    from unmix.samplers import DEFAULT_SAMPLER
    from unmix.store.checkpoint import open_checkpoint

    torch.set_num_threads(threads)
    model = load(run)  # a run folder loads its latest checkpoint
    stored = open_checkpoint(model.checkpoint)  # config only: the weights are already loaded
    step, batch, data = stored.step, stored.config["train"]["batch_size"], str(model.data["name"])
    x = model.sample(n, seed=0, nfe=nfe)
    folder = root / f"{name}-{minutes:g}min"
    folder.mkdir(parents=True, exist_ok=True)
    metrics = {**evaluate(x, data, 0), **nearest(x, data, folder / "nearest.png"), "data": data,
               "sampler": DEFAULT_SAMPLER, "nfe": nfe}
    save_grid(x[:64], folder / "grid.png", nrow=8)
    result = {"name": name, "run": str(run), "flags": CANDIDATES[name], "minutes": minutes, "steps": step,
              "images": step * batch, "parameters": sum(p.numel() for p in model.net.parameters()), **metrics}
    if model.num_classes:  # also guided, with labels drawn at the dataset's group frequencies
        labels = load_dataset(data).labels
        pick = labels[torch.randint(len(labels), (n,), generator=torch.Generator().manual_seed(0))]
        guided = evaluate(model.sample(n, seed=0, nfe=nfe, labels=pick, guidance=GUIDANCE), "emoji", 0)
        result.update({f"guided_{k}": v for k, v in guided.items()}, guidance=GUIDANCE)
    write_result(folder, result)


def resample_diffusers(root: Path, minutes: float, n: int, nfe: int) -> None:
    """The diffusers row's saved network sampled by unmix: the default sampler at 32 NFE on the pipeline folder,
    which keeps the DDPMScheduler's clip_sample (x0 clamped to [-1, 1]), so the row measures the network rather
    than diffusers' unclipped DPM-Solver++. Written to diffusers-unmix-sampler-Mmin/."""
    from unmix.api import load, save_grid
    from unmix.metrics.quality import evaluate
    from unmix.samplers import DEFAULT_SAMPLER

    torch.set_num_threads(1)
    trained = root / f"diffusers-{minutes:g}min"
    model = load(trained / "pipeline")
    x = model.sample(n, seed=0, nfe=nfe)
    folder = root / f"diffusers-unmix-sampler-{minutes:g}min"
    folder.mkdir(parents=True, exist_ok=True)
    save_grid(x[:64], folder / "grid.png", nrow=8)
    data = json.loads((trained / "result.json").read_text())["data"]
    result = {**json.loads((trained / "result.json").read_text()), "run": str(trained / "pipeline"),
              **evaluate(x, data, 0), **nearest(x, data), "sampler": f"{DEFAULT_SAMPLER} (unmix, x0 clipped)", "nfe": nfe}
    write_result(folder, result)


def write_result(folder: Path, result: dict) -> None:
    """The row's result.json (what `report` reads), also printed."""
    (folder / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def nearest(x, data: str = "emoji", sheet: Path | None = None) -> dict:
    """The copy check (unmix.metrics.copies) of samples [N, 3, 32, 32] against the data's training pictures: the
    share that are copies (Gu et al.'s rule) and the median PSNR to the nearest training picture, beside the same
    for real pictures the run never saw (the held-out split of five-style data, else leave-one-out)."""
    from unmix.data.pictures import dataset_pictures, heldout_spec
    from unmix.metrics.copies import check_copies

    held = heldout_spec(data)
    reference = None if held is None else dataset_pictures(held, x.shape[-1]).data
    check = check_copies(x, dataset_pictures(data, x.shape[-1]).data, reference)
    if sheet is not None:  # the first 32 samples, each beside its nearest training picture
        check.sheet(32, 4, worst=False).save(sheet)
    return {f"copies_{k}": v for k, v in check.figures().items()}


def report(root: Path) -> None:
    rows = [{**json.loads(p.read_text()), "folder": p.parent.name} for p in sorted(root.glob("*/result.json"))]
    print("| result folder | data | flags | parameters | minutes | steps | FD (train) | FD (held-out) | precision | "
          "recall | copies, nearest-training PSNR | guided FD / P / R |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        guided = (f"{r['guided_fd']:.1f} / {r['guided_precision']:.2f} / {r['guided_recall']:.2f} (scale {r['guidance']:g})"
                  if "guided_fd" in r else "")
        copies = (f"{r['copies_share']:.1%}, {r['copies_nearest_psnr']:.1f} dB (real unseen: "
                  f"{r['copies_reference_share']:.1%}, {r['copies_reference_nearest_psnr']:.1f} dB)"
                  if "copies_share" in r else "not measured")
        held = f"{r['fd_heldout']:.1f}" if "fd_heldout" in r else ""
        print(f"| {r['folder']} | {r['data']} | `{' '.join(r['flags']) or '(preset)'}` | {r['parameters'] / 1e6:.2f}M | "
              f"{r['minutes']:g} | {r['steps']} | {r['fd']:.1f} | {held} | {r['precision']:.2f} | {r['recall']:.2f} | "
              f"{copies} | {guided} |")


def smoke() -> None:
    """The preset and the diffusers candidate for a second each, the resampling, the reference and the table, on
    70 samples at NFE 2 in a temporary folder; skipped without the emoji pictures or diffusers."""
    from unmix.data import load_dataset
    from unmix.errors import UnmixError

    if importlib.util.find_spec("diffusers") is None:
        return print("smoke skipped: diffusers is not installed (pip install -e .[bench])")
    try:
        load_dataset("emoji")
    except UnmixError as e:
        return print(f"smoke skipped: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        root, minutes, n, nfe = Path(tmp), 0.02, 70, 2
        train(root, "patch64", minutes, n, nfe)
        train(root, "diffusers", minutes, n, nfe)
        resample_diffusers(root, minutes, n, nfe)
        report(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None, help="where the rows' folders go (default "
                        "runs/emoji_budget, runs/emoji_styles_budget for five-style data)")
    parser.add_argument("--n", type=int, default=500, help="samples measured per row")
    parser.add_argument("--nfe", type=int, default=NFE, help="network calls per sample of every row")
    parser.add_argument("--data", default="emoji", help="emoji (Noto), or five-style emoji: emoji:styles=all:split=train")
    parser.add_argument("--threads", type=int, default=1, help="threads per row (two rows side by side: 1 each)")
    parser.add_argument("--smoke", action="store_true", help="every command at toy size in a temporary folder (CI)")
    sub = parser.add_subparsers(dest="cmd")
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
    args = parser.parse_args()
    args.root = args.root or Path("runs/emoji_styles_budget" if args.data.startswith("emoji:") else "runs/emoji_budget")
    if args.smoke:
        smoke()
    elif args.cmd == "train":
        train(args.root, args.name, args.minutes, args.n, args.nfe, args.data, args.threads)
    elif args.cmd == "measure":
        measure(args.root, args.name, args.run, args.minutes, args.n, args.nfe, args.threads)
    elif args.cmd == "resample-diffusers":
        resample_diffusers(args.root, args.minutes, args.n, args.nfe)
    elif args.cmd == "report":
        report(args.root)
    else:
        parser.error("give a command (train, measure, resample-diffusers, report) or --smoke")


if __name__ == "__main__":
    main()
