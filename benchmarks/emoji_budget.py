"""Emoji on a fixed CPU budget: which U-Net learns the most in 30 minutes on one core?

Each candidate is the `unmix train --data emoji` preset with some flags; each is trained for --minutes at
one thread through the CLI (as a user would), then measured by FD / precision / recall in the emoji
feature space (500 samples, iPNDM 32 NFE, seed 0) and sampled as a 64-image grid. Two candidates can
train side by side, one per core (the flock slots keep heavier jobs out):

    flock /tmp/unmix-slotA.lock python benchmarks/emoji_budget.py train patch64 --minutes 30
    flock /tmp/unmix-slotB.lock python benchmarks/emoji_budget.py train fullres32 --minutes 30
    python benchmarks/emoji_budget.py measure patch64 runs/my-run   # a run trained by hand with those flags
    python benchmarks/emoji_budget.py report        # table from runs/emoji_budget/*/result.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CANDIDATES = {
    # the preset until 2026-11-22: 32 channels at 32, 16, 8 and 4 pixels
    "fullres32": ["--patch", "1", "--channels", "32", "--channel-mult", "1,2,2,2", "--attn", "2,3"],
    # today's preset: 2x2 patches folded into channels, 64 channels at 16, 8 and 4 pixels
    "patch64": [],
    "patch64-cond": ["--cond", "label"],
}
ROOT = Path("runs/emoji_budget")
GUIDANCE = 2.0  # class-conditional candidates are also measured guided at this scale


def train(name: str, minutes: float) -> None:
    out = ROOT / name
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "unmix", "train", "--data", "emoji", "--out", str(out), "--minutes",
                    str(minutes), "--threads", "1", "--sample-every", "1000000", "--checkpoint-every", "1000000",
                    *CANDIDATES[name]], check=True, env=env)
    measure(name, out, minutes)


def measure(name: str, run: Path, minutes: float) -> None:
    """FD and friends of a run trained with the candidate's flags (by `train`, or by hand), and its grid."""
    import torch

    torch.set_num_threads(1)
    from unmix.api import load, save_grid
    from unmix.checkpoint import open_checkpoint
    from unmix.data import load_dataset
    from unmix.metrics.evaluate import evaluate
    from unmix.samplers import DEFAULT_SAMPLER

    model = load(run)  # a run folder loads its latest checkpoint
    stored = open_checkpoint(model.checkpoint)  # config only: the weights are already loaded
    step, batch = stored.step, stored.config["train"]["batch_size"]
    metrics = {**evaluate(model.sample(500, seed=0, nfe=32), "emoji", 0), "data": "emoji", "sampler": DEFAULT_SAMPLER, "nfe": 32}
    (ROOT / name).mkdir(parents=True, exist_ok=True)
    save_grid(model.sample(64, seed=0), ROOT / name / "grid.png", nrow=8)
    result = {"name": name, "run": str(run), "flags": CANDIDATES[name], "minutes": minutes, "steps": step,
              "images": step * batch, "parameters": sum(p.numel() for p in model.net.parameters()), **metrics}
    if model.num_classes:  # also guided, with labels drawn at the dataset's group frequencies
        labels = load_dataset("emoji").labels
        pick = labels[torch.randint(len(labels), (500,), generator=torch.Generator().manual_seed(0))]
        guided = evaluate(model.sample(500, seed=0, nfe=32, labels=pick, guidance=GUIDANCE), "emoji", 0)
        result.update({f"guided_{k}": v for k, v in guided.items()}, guidance=GUIDANCE)
    (ROOT / name / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


def report() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(ROOT.glob("*/result.json"))]
    print("| candidate | flags | parameters | minutes | steps | FD | precision | recall | guided FD / P / R |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        guided = (f"{r['guided_fd']:.1f} / {r['guided_precision']:.2f} / {r['guided_recall']:.2f} (scale {r['guidance']:g})"
                  if "guided_fd" in r else "")
        print(f"| {r['name']} | `{' '.join(r['flags']) or '(preset)'}` | {r['parameters'] / 1e6:.2f}M | {r['minutes']:g} | "
              f"{r['steps']} | {r['fd']:.1f} | {r['precision']:.2f} | {r['recall']:.2f} | {guided} |")


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
    sub.add_parser("report")
    args = parser.parse_args()
    if args.cmd == "train":
        train(args.name, args.minutes)
    elif args.cmd == "measure":
        measure(args.name, args.run, args.minutes)
    else:
        report()
