"""Catch a launch that asked for several processes but started this one alone.

unmix joins a process group only through torchrun's variables (WORLD_SIZE, RANK, MASTER_ADDR, ...). Other
launchers leave their own traces, and when those say N > 1 while WORLD_SIZE is 1, N copies of a
single-process run would each train alone (into the same folder), or the N - 1 missing processes were
silently dropped. Measured with accelerate 1.15 on a CPU machine:

    accelerate launch --cpu --num_processes 2 ...        ONE process; sets ACCELERATE_USE_CPU=True and no count
    accelerate launch --num_processes 2 ... (no GPUs)     ONE process; no count in the environment either
    accelerate launch --multi_gpu --num_processes 2 ...   torchrun underneath: WORLD_SIZE=2, works on CPU (gloo)

so for accelerate the only trace of the request is the launcher's own command line (our parent process).
SLURM's srun sets SLURM_STEP_NUM_TASKS (SLURM_NTASKS for the whole allocation); MPI launchers set
OMPI_COMM_WORLD_SIZE (Open MPI), PMI_SIZE (MPICH, Intel MPI) or MV2_COMM_WORLD_SIZE (MVAPICH2).
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

SCALE_OUT_DOC = "docs/scale_out.md"
_MPI = (("OMPI_COMM_WORLD_SIZE", "Open MPI"), ("PMI_SIZE", "MPI (PMI)"), ("MV2_COMM_WORLD_SIZE", "MVAPICH2"))


def _count(value) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def parent_argv(pid: int | None = None) -> list[str]:
    """The command line of this process's parent (Linux /proc), or [] where it cannot be read."""
    try:
        raw = Path(f"/proc/{pid or os.getppid()}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def accelerate_processes(argv: Sequence[str]) -> int | None:
    """N from an accelerate launcher's command line (`accelerate launch ... --num_processes N ...`), else None.

    unmix's own commands take no --num_processes, so the flag anywhere on the line is the launcher's."""
    argv = list(argv)
    if not any(os.path.basename(a).startswith(("accelerate", "accelerate.commands")) for a in argv[:3]):
        return None
    for j, arg in enumerate(argv):
        name, sep, value = arg.partition("=")
        if name in ("--num_processes", "--num-processes"):
            return _count(value if sep else (argv[j + 1] if j + 1 < len(argv) else None))
    return None


def launcher_warning(environ: Mapping[str, str], parent: Sequence[str] | None = None) -> str | None:
    """One line saying why this single process is probably not what the launch asked for, or None.

    `environ` is os.environ (or a copy); `parent` is the launcher's command line, e.g. parent_argv(), the
    only place `accelerate launch --cpu --num_processes N` records N.
    """
    world = _count(environ.get("WORLD_SIZE", "1")) or 1
    if world > 1:
        return None
    n = accelerate_processes(parent or [])
    if n and n > 1:
        return (f"accelerate launch asked for {n} processes but started this one alone (WORLD_SIZE is 1: its --cpu "
                f"and single-device launchers run one process); for {n} processes use `accelerate launch --multi_gpu "
                f"--num_processes {n} -m unmix train ...` (torchrun underneath, CPU too) or `torchrun --standalone "
                f"--nproc-per-node {n} -m unmix train ...`")
    slurm_key = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in environ else "SLURM_NTASKS"
    n = _count(environ.get(slurm_key))
    if n and n > 1:
        return (f"SLURM runs {n} tasks ({slurm_key}) but this process is in no torchrun process group (WORLD_SIZE "
                f"is 1), so each task would train alone into the same folder; start one torchrun per node instead: "
                f"srun --ntasks-per-node=1 torchrun --nnodes $SLURM_NNODES ... (see {SCALE_OUT_DOC})")
    for key, who in _MPI:
        n = _count(environ.get(key))
        if n and n > 1:
            return (f"{who} started {n} processes ({key}) but WORLD_SIZE is 1: unmix joins torchrun process groups, "
                    f"not MPI ones, so each process would train alone; launch with torchrun (see {SCALE_OUT_DOC})")
    return None


def warn_lone_launch(rank: int, environ: Mapping[str, str] | None = None) -> str | None:
    """Print launcher_warning (for this process's environment and parent) to stderr on rank 0; return it."""
    message = launcher_warning(os.environ if environ is None else environ, parent_argv()) if rank == 0 else None
    if message:
        print(f"warning: {message}", file=sys.stderr, flush=True)
    return message
