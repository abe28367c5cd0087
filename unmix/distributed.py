"""Where a run executes: the torchrun process group (DDP), the device, and the CPU thread count."""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from unmix.errors import UnmixError


@dataclass
class Dist:
    """This process's place in a torchrun launch (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """Join the torchrun process group if launched by torchrun (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def finish_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(name: str, d: Dist | None = None) -> torch.device:
    """`auto` (CUDA when present), `cpu`, `cuda` (this rank's GPU) or `cuda:N`, checked against the machine."""
    d = d or Dist()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{d.local_rank}"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UnmixError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N, mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UnmixError(f"device {name} asked for, but PyTorch sees no CUDA GPU; use device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UnmixError(f"device {name} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UnmixError("device mps asked for, but PyTorch sees no Apple GPU; use device='cpu'")
    return device


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (hyper-threads share a core)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(c)))
    return max(1, len(cores))


def idle_cpus() -> int:
    """CPUs this process may use, less its share of the last minute's load average (at least 1).

    Another busy process takes a core away: OpenMP threads that outnumber the idle cores wait for each other at
    every barrier, and a small network then runs 10-50x slower than on one thread (benchmarks/threads_under_load.py).
    """
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0] * usable / (os.cpu_count() or usable)  # the share of the load on our CPUs
    except OSError:
        load = 0.0
    return max(1, min(usable, int(usable - load + 0.5)))


def cpu_threads(requested: int | None, d: Dist) -> int:
    """`requested`, else OMP_NUM_THREADS when the user set it, else the physical cores that are idle, shared among
    the local ranks."""
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if requested or (omp.isdigit() and int(omp) > 0):
        return requested or int(omp)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(d.world)))
    return max(1, min(physical_cores(), idle_cpus()) // local_world)


def machine() -> str:
    """This machine in one line, for the record beside a measurement: the CPU's model name, its logical cores,
    the GPU if there is one, and torch's version."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        cpu = platform.processor() or platform.machine()
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}"
