"""What a training run reports and how it is stopped: loss statistics, the JSON log, the progress bar, signals."""
from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

import torch
import torch.distributed as dist

from unmix.distributed import Dist


class Stop:
    """Ctrl-C / SIGTERM set a flag; the loop finishes its step, saves and exits. A second Ctrl-C aborts."""

    def __init__(self):
        self.signal: str | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: finishing this step, then saving a checkpoint "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


class StepStats:
    """Loss sums per noise-level quartile and gradient norms, kept on the device until a log step."""

    def __init__(self, device):
        self.device = device
        self.reset()

    def reset(self):
        self.sums = torch.zeros(4, device=self.device, dtype=torch.float64)
        self.counts = torch.zeros(4, device=self.device, dtype=torch.float64)
        self.grad = torch.zeros(2, device=self.device, dtype=torch.float64)
        self.count = 0

    def add(self, per_sample: torch.Tensor, bucket: torch.Tensor):
        q = (bucket * 4).long().clamp(0, 3)
        self.sums.index_add_(0, q, per_sample.double())
        self.counts.index_add_(0, q, torch.ones_like(per_sample, dtype=torch.float64))
        self.count += 1

    def add_grad(self, norm: torch.Tensor):
        self.grad += torch.stack([norm.double(), torch.ones((), device=self.device, dtype=torch.float64)])

    def reduce(self, d: Dist) -> dict:
        packed = torch.cat([self.sums, self.counts, self.grad])
        if d.world > 1:
            dist.all_reduce(packed)
        s, c, g = packed[:4].tolist(), packed[4:8].tolist(), packed[8:].tolist()
        self.reset()
        return {
            "loss": sum(s) / max(sum(c), 1),
            **{f"loss_q{i}": (s[i] / c[i] if c[i] else None) for i in range(4)},
            "grad_norm": g[0] / max(g[1], 1),
        }


def append_log(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_log(path: Path, step: int) -> None:
    """On resume, drop log lines written after the checkpoint (they will be written again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if line.strip() and json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:  # a line cut by a crash mid-write
            continue
    path.write_text("".join(line + "\n" for line in keep))


def progress_bar(enabled: bool, step: int, steps: int | None, minutes: float | None):
    from tqdm import tqdm

    desc = "train" if minutes is None else f"train ({minutes:g} min)"
    interval = 0.5 if sys.stderr.isatty() else 30.0  # a log file gets a line every 30 s, not a flood
    return tqdm(total=steps, initial=step, desc=desc, disable=not enabled, dynamic_ncols=True, unit="step",
                mininterval=interval)


# A run's time is estimated from the speed of this many steps after its first (which pays one-time costs), and a
# run estimated at more than LONG_RUN_HOURS with no time budget gets a warning.
ESTIMATE_STEPS = 3
LONG_RUN_HOURS = 3.0


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} minutes" if seconds < 90 * 60 else f"{seconds / 3600:.1f} hours"


def estimate_lines(per_step: float, step: int, steps: int | None, minutes: float | None, elapsed: float) -> list[str]:
    """The rest of a run at `per_step` seconds per step, as lines to print (in Python's words: minutes=30);
    a warning when it is long and has no time budget."""
    by_steps = (steps - step) * per_step if steps is not None else float("inf")
    by_minutes = minutes * 60 - elapsed if minutes is not None else float("inf")
    if by_minutes < by_steps:
        return [f"time estimate: {per_step:.3g} s/step, so the {minutes:g}-minute budget ends the run near step "
                f"{step + int(by_minutes / per_step)}" + (f" of {steps}" if steps is not None else "")]
    lines = [f"time estimate: {per_step:.3g} s/step, {steps - step} steps to go: about {_duration(by_steps)} more"]
    if by_steps > LONG_RUN_HOURS * 3600 and minutes is None:
        lines.append(f"warning: that is more than {LONG_RUN_HOURS:g} hours; give the run a time budget, e.g. minutes=30, "
                     "or fewer steps=N (checkpoints are kept: resume=True continues it later)")
    return lines


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as package_version

    try:
        return package_version("unmix")
    except PackageNotFoundError:
        return "unknown"
