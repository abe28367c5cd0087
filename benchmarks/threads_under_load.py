"""The CPU thread default under load: `unmix sample` and `unmix inpaint` on digits with 0 and 1 other busy processes.

Each row is one command with N busy processes (`python -c "while True: pass"`, each pinned to one of this
process's cores, started and stopped here); the columns are the command's wall time with the default thread
count (no --threads, no OMP_NUM_THREADS), with --threads 1 and with --threads 2, as a user runs them (import and
model load included); the busy processes spin for --settle seconds before a row, as another job would have, so
that the load average sees them. The settings of a row are timed in interleaved rounds and the median round is
kept, so the load of other jobs on the machine hits all of them. A row passes when the default is within 1.5x of the best
setting.

    flock /tmp/unmix-heavy.lock python benchmarks/threads_under_load.py [--run runs/digits] [--rounds 3]
    python benchmarks/threads_under_load.py --smoke      # one round of small jobs with 1 busy process
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from unmix.distributed import idle_cpus, physical_cores

SETTINGS = {"default": [], "1 thread": ["--threads", "1"], "2 threads": ["--threads", "2"]}
UNMIX = [sys.executable, "-m", "unmix"]


def env() -> dict:
    """The user's environment without a thread setting, so that the default is the library's own."""
    return {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")}


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def busy(n: int) -> list[subprocess.Popen]:
    """`n` spinning processes, each pinned to one of the last `n` cores this process may use."""
    cores = sorted(os.sched_getaffinity(0))[::-1][:n]
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             preexec_fn=lambda c=c: os.sched_setaffinity(0, {c})) for c in cores]


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.terminate()
        p.wait()


def jobs(run: Path, work: Path, smoke: bool) -> dict[str, list[str]]:
    """The two commands of a row, on `run`: 64 digits (16 in a smoke run) and 8 inpaintings of the top half."""
    image, mask = work / "digit.png", work / "mask.png"
    Image.new("L", (8, 8), 128).save(image)
    m = Image.new("L", (8, 8))
    m.paste(255, (0, 0, 8, 4))
    m.save(mask)
    n = ["--n", "16", "--nfe", "8"] if smoke else ["--n", "64"]
    return {"sample": [*UNMIX, "sample", str(run), *n, "--no-singles"],
            "inpaint": [*UNMIX, "inpaint", str(run), str(image), "--mask", str(mask), "--n", "2" if smoke else "8"]}


def row(cmd: list[str], out: Path, rounds: int) -> dict[str, float]:
    """Median wall seconds of each setting, in interleaved rounds; each run writes into a fresh folder."""
    times = {k: [] for k in SETTINGS}
    for r in range(rounds):
        for name, flags in SETTINGS.items():
            target = out / f"{name.replace(' ', '')}-{r}"
            times[name].append(timed([*cmd, *flags, "--out", str(target)]))
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, help="A trained digits run (default: one trained here for a few steps; "
                                             "the timing does not depend on the weights).")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy", type=int, nargs="+", default=[0, 1], help="Busy processes per row.")
    ap.add_argument("--settle", type=float, default=60.0, help="Seconds the busy processes run before a row starts, so "
                                                              "that the load average sees them (0: just started).")
    ap.add_argument("--json", type=Path, help="Also write the table here.")
    ap.add_argument("--smoke", action="store_true", help="One round of small jobs with 1 busy process, no pass/fail.")
    args = ap.parse_args()
    rounds, loads, settle = (1, [1], 0.0) if args.smoke else (args.rounds, args.busy, args.settle)
    work = Path(tempfile.mkdtemp(prefix="threads-"))
    try:
        run = args.run
        if run is None:
            run = work / "digits"
            subprocess.run([*UNMIX, "train", "--steps", "2", "--no-preview", "--out", str(run)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        for n_busy in loads:
            for job, cmd in jobs(run, work, args.smoke).items():
                procs = busy(n_busy)
                try:
                    time.sleep(settle if n_busy else 0.0)
                    picks = min(physical_cores(), idle_cpus())  # what the default chooses at this moment
                    times = row(cmd, work / f"{job}-{n_busy}", rounds)
                finally:
                    stop(procs)
                ratio = round(times["default"] / min(times.values()), 2)
                rows.append({"command": job, "busy": n_busy, **times, "default / best": ratio, "default threads": picks})
                print(f"{job:8s} busy {n_busy}: " + "  ".join(f"{k} {v:6.2f} s" for k, v in times.items())
                      + f"  default/best {ratio:.2f} (default: {picks} thread(s) when the row started)", flush=True)
        result = {"machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at the end", "rounds": rounds,
                  "rows": rows}
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        if not args.smoke:
            failed = [r for r in rows if r["default / best"] > 1.5]
            print("default within 1.5x of the best in every row" if not failed else f"{len(failed)} row(s) over 1.5x")
            sys.exit(1 if failed else 0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
