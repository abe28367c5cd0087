"""Does unmix's synthetic data help a classifier that has only k labelled digits per class?

Design (fixed before any result was seen):
- Split: scikit-learn's 1,797 digits, stratified 70/30 with a fixed seed: 1,257 training and 540 held-out
  images. Held-out images are used for nothing but the final accuracy (the generator never sees them).
- Labels: for each seed, k = 5, 10, 20 labelled images per class are drawn from the training split; the
  rest of the training split is kept UNLABELLED (semi-supervised setting).
- Generator: one class-conditional unmix model per (k, seed), trained through the library (unmix.training.trainer)
  on the whole training split, the unlabelled images carrying the "no label" class (what label dropout
  uses, so they teach the model digits without a class) and the labelled images repeated so they make up
  about a quarter of the draws. A 16-channel digits U-Net, STEPS steps of batch 128.
- Synthetic data: unmix.apps.synth.synthesize, PER_CLASS images per class at guidance 1.5 (unmix's default)
  and 3, default sampler at NFE 32 (--nfe).
- Classifiers: scikit-learn SVC (RBF, C=10, gamma="scale") and logistic regression (C=1), on raw pixels,
  hyper-parameters fixed a priori. Arms on the same k real images per seed:
    real          the k x 10 real images alone
    augmented     plus PER_CLASS classical augmentations per class (rotations of up to 15 degrees, shifts of
                  -1, 0 or 1 pixel), the same count as the synthetic arms
    augmented, shifts <= 0.5 px   the same with sub-pixel shifts. Added after the design was fixed, when a
                  check showed whole-pixel shifts cut 8x8 digits (an SVC trained on all training digits, shifted
                  the same way, scores 93% on shifted held-out digits against 99% unshifted); it only makes
                  the baseline stronger.
    synthetic w   plus PER_CLASS synthetic images per class at guidance w
- Seeds 0..SEEDS-1 (the labelled subset, the generator, its samples and the augmentations all change);
  mean and standard deviation over seeds, and the paired difference to `real`.
- A diagnostic, not used by any arm: the share of synthetic images that an SVC trained on the fully
  labelled training split puts in their intended class ("label fidelity").

    flock /tmp/unmix-heavy.lock python benchmarks/synthetic_data.py run    # repeat until it prints "done"
    python benchmarks/synthetic_data.py report                            # markdown tables
    python benchmarks/synthetic_data.py --smoke    # both at toy size (one seed, 2 steps, 5 per class, NFE 4) in a temp folder
"""
from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unmix.apps.synth import labelled_tensors, synthesize
from unmix.data import Dataset
from unmix.data.digits import load_digits
from unmix.model import load
from unmix.store import checkpoint as ckpt
from unmix.training.config import TrainConfig
from unmix.training.trainer import resume, start

KS = (5, 10, 20)
SEEDS = 3
PER_CLASS = 100
GUIDANCE = (1.5, 3.0)
STEPS = 800
NET = {"channels": 16}
LABELLED_SHARE = 0.25


def split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_test, y_test): the stratified 70/30 split every arm and seed shares."""
    from sklearn.model_selection import train_test_split

    ds = load_digits()
    idx = np.arange(len(ds))
    tr, te = train_test_split(idx, test_size=0.3, stratify=ds.labels.numpy(), random_state=0)
    x, y = ds.data.float(), ds.labels
    return x[tr], y[tr], x[te], y[te]


def labelled_subset(y: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """Indices of k training images per class, drawn with this seed (a separate draw for every k)."""
    g = torch.Generator().manual_seed(1000 * k + seed)
    picks = [torch.nonzero(y == c).flatten() for c in range(10)]
    return torch.cat([p[torch.randperm(len(p), generator=g)[:k]] for p in picks])


def generator_dataset(x: torch.Tensor, y: torch.Tensor, labelled: torch.Tensor) -> Dataset:
    """The training split with only `labelled` keeping its class; those repeated to ~LABELLED_SHARE of the draws."""
    unlabelled = torch.ones(len(x), dtype=torch.bool)
    unlabelled[labelled] = False
    repeat = max(1, round(LABELLED_SHARE / (1 - LABELLED_SHARE) * int(unlabelled.sum()) / len(labelled)))
    xs = torch.cat([x[unlabelled]] + [x[labelled]] * repeat)
    ys = torch.cat([torch.full((int(unlabelled.sum()),), 10)] + [y[labelled]] * repeat)  # 10 = "no label"
    return Dataset("digits", xs, ys, [str(c) for c in range(10)])


def augment(x: torch.Tensor, copies: int, seed: int, max_shift: float = 1.0, whole_pixels: bool = True) -> torch.Tensor:
    """`copies` random versions of each image: rotation in [-15, 15] degrees, then a shift of up to max_shift
    pixels per axis (whole pixels in {-1, 0, 1}, or any amount in [-max_shift, max_shift])."""
    g = torch.Generator().manual_seed(seed)
    x = x.repeat_interleave(copies, 0)
    n = len(x)
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(15)
    if whole_pixels:
        shift = torch.randint(-int(max_shift), int(max_shift) + 1, (n, 2), generator=g).float()
    else:
        shift = (torch.rand(n, 2, generator=g) * 2 - 1) * max_shift
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    theta[:, :, 2] = shift * (2 / x.shape[-1])  # pixels in the [-1, 1] units of affine_grid
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1  # background stays -1


def classifiers():
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    return {"SVC": lambda: SVC(C=10, gamma="scale"), "logistic": lambda: LogisticRegression(C=1.0, max_iter=5000)}


def accuracy(make, x, y, x_test, y_test) -> float:
    clf = make().fit(x.flatten(1).numpy(), y.numpy())
    return float((clf.predict(x_test.flatten(1).numpy()) == y_test.numpy()).mean())


def train_generator(work: Path, k: int, seed: int, x, y, steps: int, minutes: float, nfe: int) -> Path | None:
    """The generator's final checkpoint, training (or resuming) it for at most `minutes`; None if not done yet."""
    out = work / f"generator-k{k}-seed{seed}"
    done = out / "DONE"
    if not done.exists():
        dataset = generator_dataset(x, y, labelled_subset(y, k, seed))
        if ckpt.list_checkpoints(out):
            run = resume(out, dataset, steps=steps, minutes=minutes)
        else:
            run = start(TrainConfig(data="digits", cond="label", steps=steps, minutes=minutes, out=str(out), seed=seed,
                                    threads=1, net=NET, checkpoint_every=steps, sample_every=steps, log_every=100, nfe=nfe),
                        dataset)
        result = run.train(progress=False)
        if result.step < steps:
            return None
        done.write_text(str(result.checkpoint) + "\n")
    return Path(done.read_text().strip())


def run(args) -> None:
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    x, y, x_test, y_test = split()
    results_path = work / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    reference = classifiers()["SVC"]().fit(x.flatten(1).numpy(), y.numpy())  # diagnostic only
    deadline = time.monotonic() + args.minutes * 60
    for seed in range(args.seeds):
        for k in KS:
            key = f"k{k}-seed{seed}"
            if key in results and len(results[key]["accuracy"]["SVC"]) == 3 + len(GUIDANCE):  # every arm measured
                continue
            if time.monotonic() > deadline:
                print("time budget spent; run again to continue", flush=True)
                return
            start_time = time.monotonic()
            checkpoint = train_generator(work, k, seed, x, y, args.steps, max(0.5, (deadline - time.monotonic()) / 60),
                                         args.nfe)
            if checkpoint is None:
                print(f"{key}: generator not finished; run again to continue", flush=True)
                return
            model = load(checkpoint)
            lab = labelled_subset(y, k, seed)
            xr, yr = x[lab], y[lab]
            copies = max(1, args.per_class // k)
            arms = {"real": (xr, yr), "augmented": (torch.cat([xr, augment(xr, copies, seed)]),
                                                    torch.cat([yr, yr.repeat_interleave(copies)])),
                    "augmented, shifts <= 0.5 px": (torch.cat([xr, augment(xr, copies, seed, 0.5, False)]),
                                                    torch.cat([yr, yr.repeat_interleave(copies)]))}
            fidelity = {}
            for w in GUIDANCE:
                folder = work / f"synth-{key}-w{w:g}"
                if not (folder / "labels.csv").exists():
                    synthesize(model, args.per_class, folder, guidance=w, seed=seed * 100_000, nfe=args.nfe, overwrite=True)
                xs, ys = labelled_tensors(folder)
                arms[f"synthetic w={w:g}"] = (torch.cat([xr, xs]), torch.cat([yr, ys]))
                fidelity[f"w={w:g}"] = float((reference.predict(xs.flatten(1).numpy()) == ys.numpy()).mean())
            results[key] = {
                "k": k, "seed": seed, "fidelity": fidelity,
                "accuracy": {name: {arm: accuracy(make, xa, ya, x_test, y_test) for arm, (xa, ya) in arms.items()}
                             for name, make in classifiers().items()},
            }
            results_path.write_text(json.dumps(results, indent=1) + "\n")
            print(key, json.dumps(results[key]["accuracy"]), f"fidelity {fidelity}",
                  f"({time.monotonic() - start_time:.0f} s)", flush=True)
    print("done")


def _std(v: np.ndarray) -> float:
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


def report(args) -> None:
    results = json.loads((Path(args.work) / "results.json").read_text())
    rows = list(results.values())
    arms = list(rows[0]["accuracy"]["SVC"])
    print(f"held-out accuracy (%) on 540 digits, mean +- std over {args.seeds} seeds; in brackets the paired "
          f"difference to `real`\n")
    for name in classifiers():
        print(f"**{name}**\n\n| k per class | " + " | ".join(arms) + " |\n|---|" + "---|" * len(arms))
        for k in KS:
            runs = [r["accuracy"][name] for r in rows if r["k"] == k]
            if not runs:
                continue
            cells = []
            for arm in arms:
                a = 100 * np.array([r[arm] for r in runs])
                d = a - 100 * np.array([r["real"] for r in runs])
                paired = "" if arm == "real" else f" ({d.mean():+.1f} +- {_std(d):.1f})"
                cells.append(f"{a.mean():.1f} +- {_std(a):.1f}{paired}")
            print(f"| {k} ({len(runs)} seeds) | " + " | ".join(cells) + " |")
        print()
    print("label fidelity of the synthetic images (share an SVC trained on the fully labelled training split puts in "
          "their intended class), mean over seeds:\n")
    print("| k per class | " + " | ".join(rows[0]["fidelity"]) + " |\n|---|" + "---|" * len(rows[0]["fidelity"]))
    for k in KS:
        fids = [r["fidelity"] for r in rows if r["k"] == k]
        if fids:
            print(f"| {k} | " + " | ".join(f"{100 * np.mean([f[w] for f in fids]):.1f}%" for w in fids[0]) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("command", nargs="?", choices=["run", "report"])
    p.add_argument("--seeds", type=int, default=SEEDS)
    p.add_argument("--steps", type=int, default=STEPS, help="generator training steps")
    p.add_argument("--per-class", type=int, default=PER_CLASS, help="synthetic (and augmented) images per class")
    p.add_argument("--nfe", type=int, default=32, help="the sampler's NFE (synthetic images, previews)")
    p.add_argument("--minutes", type=float, default=8.0, help="`run` stops after about this long (run it again)")
    p.add_argument("--work", default="runs/synthetic_data")
    p.add_argument("--smoke", action="store_true", help="run and report at toy size in a temporary folder (CI)")
    args = p.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            args.work, args.seeds, args.steps, args.per_class, args.nfe = tmp, 1, 2, 5, 4
            run(args)
            return report(args)
    if args.command is None:
        p.error("give a command (run, report) or --smoke")
    {"run": run, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
