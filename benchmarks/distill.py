"""Distilled students next to their teacher, side by side in one run: FD / precision / recall in the data's
feature space (unmix.metrics.quality), images per second, and what the distillation cost.

Digits (progressive distillation 16 -> 8 -> 4 -> 2 -> 1 Euler steps, one bounded round per call):

    OMP_NUM_THREADS=1 unmix train --data digits --out runs/digits --minutes 5 --threads 1     # the teacher
    OMP_NUM_THREADS=1 python benchmarks/distill.py train      # ONE round per call (<= --minutes); call 4 times
    OMP_NUM_THREADS=1 python benchmarks/distill.py eval --n 500   # the table, and results.json in --out
    python benchmarks/distill.py --smoke      # a toy teacher, the four rounds and the table, in a temporary folder

Emoji (a latent model; the students come from the CLI, two rounds per call):

    unmix train --data emoji --latent --minutes 30 --threads 1 --out runs/emoji_latent
    unmix distill runs/emoji_latent --nfe 4 --minutes 24 --threads 1 --out runs/emoji_latent-4      # 8, 4 steps
    unmix distill runs/emoji_latent-4 --nfe 1 --minutes 24 --threads 1 --out runs/emoji_latent-1    # 2, 1 steps
    python benchmarks/distill.py eval --data emoji --teacher runs/emoji_latent \
        --students runs/emoji_latent-4/rounds/nfe-8 runs/emoji_latent-4 runs/emoji_latent-1/rounds/nfe-2 \
        runs/emoji_latent-1 --out runs/distill_emoji --threads 2

Digits round r distils the previous round's model (runs/distill_digits/nfe-2K) into runs/distill_digits/nfe-K
with `unmix.apps.distill.distill` (the library call behind `unmix distill`); the first round's teacher is the trained
model stepped by EDM's Heun sampler on 16 steps (31 NFE). The teacher is sampled by the default sampler at 1-32 NFE
(and at 32 NFE with three seed ranges, whose spread is the evaluator's seed-to-seed noise), each student at its own
step count. A round's cost is its CPU minutes where the train stage recorded them, else its wall minutes (1 thread).
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import unmix
from unmix.apps.distill import DONE, DistillSettings, distill
from unmix.distributed import machine
from unmix.metrics.quality import evaluate
from unmix.model import load

CHAIN = (8, 4, 2, 1)


def train_next(teacher: str, out: Path, minutes: float, first: int, batch_size: int) -> None:
    """Run the first unfinished round of the chain (each call is one bounded job)."""
    previous = teacher
    for k in CHAIN:
        folder = out / f"nfe-{k}"
        if (folder / DONE).is_file():
            previous = str(folder)
            continue
        t0, c0 = time.time(), time.process_time()
        settings = DistillSettings(from_nfe=first if k == CHAIN[0] else None, minutes=minutes, batch_size=batch_size,
                                   threads=1)
        result = distill(previous, k, folder, settings)
        cpu = (time.process_time() - c0) / 60
        print(f"round nfe-{k}: {result.step} steps, stopped by {result.stopped_by}, {(time.time() - t0) / 60:.1f} "
              f"wall min, {cpu:.1f} CPU min -> {folder}")
        (folder / "cpu_minutes.json").write_text(json.dumps({"cpu_minutes": cpu}) + "\n")
        return
    print("all rounds done")


def _row(name: str, model, sampler: str | None, nfe: int, n: int, data: str, seed: int = 0) -> dict:
    t0 = time.perf_counter()
    x = model.sample(n, seed=seed, sampler=sampler, nfe=nfe)
    seconds = time.perf_counter() - t0
    metrics = evaluate(x, data)
    row = {"model": name, "sampler": sampler or model.sampling.get("sampler"), "nfe": nfe, "seed": seed,
           "fd": metrics["fd"], "precision": metrics["precision"], "recall": metrics["recall"],
           "images_per_s": n / seconds}
    print(f"{name:14s} {row['sampler']:6s} NFE {nfe:3d}  FD {row['fd']:8.3f}  P {row['precision']:.3f}  "
          f"R {row['recall']:.3f}  {row['images_per_s']:8.1f} img/s", flush=True)
    return row


def _minutes(folder: Path) -> dict:
    """Wall-clock training minutes of a round (its stats.jsonl) and the process's CPU minutes where recorded."""
    lines = (folder / "stats.jsonl").read_text().splitlines()
    cpu = folder / "cpu_minutes.json"
    return {"wall": float(json.loads(lines[-1])["seconds"]) / 60 if lines else float("nan"),
            "cpu": json.loads(cpu.read_text())["cpu_minutes"] if cpu.is_file() else None}


def evaluate_all(teacher: str, students: list[Path], out: Path, n: int, data: str, threads: int = 1) -> dict:
    torch.set_num_threads(threads)
    rows = []
    model = load(teacher)
    for nfe in (1, 2, 4, 8, 16):
        rows.append(_row("teacher", model, "auto", nfe, n, data))
    noise = [_row("teacher", model, "auto", 32, n, data, seed) for seed in (0, 100_000, 200_000)]
    rows += noise
    costs = {}
    for folder in students:
        student = load(folder)
        k = student.sampling["nfe"]
        rows.append(_row(f"student nfe-{k}", student, None, k, n, data))
        costs[k] = _minutes(folder)
    fds = [r["fd"] for r in noise]
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "threads": threads, "n": n, "data": data, "teacher": teacher, "rows": rows,
              "teacher32_fd_mean": statistics.mean(fds), "teacher32_fd_sd": statistics.stdev(fds),
              "round_minutes": costs, "total_distill_wall_minutes": sum(c["wall"] for c in costs.values())}
    print(f"teacher@32 FD {result['teacher32_fd_mean']:.3f} +- {result['teacher32_fd_sd']:.3f} (3 seed ranges); "
          f"distillation {result['total_distill_wall_minutes']:.1f} wall minutes over {len(costs)} rounds; per round {costs}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", nargs="?", choices=("train", "eval"))
    p.add_argument("--data", default="digits", help="The evaluator's feature space (digits, emoji).")
    p.add_argument("--teacher", default="runs/digits")
    p.add_argument("--students", nargs="*", type=Path, default=None,
                   help="Student run folders to evaluate (default: the digits chain under --out).")
    p.add_argument("--out", default="runs/distill_digits")
    p.add_argument("--minutes", type=float, default=5.0, help="Training minutes of one round.")
    p.add_argument("--from-nfe", type=int, default=16, help="The teacher's Heun steps in the first round.")
    p.add_argument("--batch-size", type=int, default=32, help="Images per step (small: more steps per CPU minute).")
    p.add_argument("--n", type=int, default=500, help="Samples per row (FD grows as n falls: compare rows at equal n).")
    p.add_argument("--threads", type=int, default=1, help="Threads for eval (training rounds use 1).")
    p.add_argument("--smoke", action="store_true", help="a 2-step teacher of 8 channels, four 1-second rounds and "
                   "the table on 70 samples, in a temporary folder (CI)")
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            a.teacher, a.out, a.minutes, a.n = f"{tmp}/teacher", tmp, 0.02, 70
            unmix.train("digits", out=a.teacher, steps=2, net={"channels": 8}, threads=1, nfe=4, progress=False)
            for _ in CHAIN:
                train_next(a.teacher, Path(a.out), a.minutes, a.from_nfe, a.batch_size)
            return evaluate_all(a.teacher, _students(a), Path(a.out), a.n, a.data, a.threads)
    if a.stage is None:
        p.error("give a stage (train, eval) or --smoke")
    if a.stage == "train":
        train_next(a.teacher, Path(a.out), a.minutes, a.from_nfe, a.batch_size)
    else:
        evaluate_all(a.teacher, _students(a), Path(a.out), a.n, a.data, a.threads)


def _students(a) -> list[Path]:
    """--students, or the finished rounds of the digits chain under --out."""
    if a.students is not None:
        return a.students
    return [Path(a.out) / f"nfe-{k}" for k in CHAIN if (Path(a.out) / f"nfe-{k}" / DONE).is_file()]


if __name__ == "__main__":
    main()
