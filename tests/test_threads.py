"""CPU threads (issue 34): every command that computes takes --threads, and the default does not collapse on a busy
machine (fewer threads than cores when other processes load them; OpenMP threads that wait sleep, not spin)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import typer.main

import unmix.cli.commands  # noqa: F401  registers every command
from unmix.cli.app import app, run_app
from unmix.distributed import Dist, cpu_threads, idle_cpus

# Commands that run no network or sampler: they read files, or noise one picture.
NOT_COMPUTING = {"info", "noise", "data install"}


def _commands(group, prefix=""):
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_every_computing_command_takes_threads():
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"sample", "inpaint", "edit", "eval", "nll", "train", "distill", "synth", "serve", "demo"} <= commands.keys()
    missing = [name for name, cmd in commands.items() if name not in NOT_COMPUTING
               and not any("--threads" in p.opts for p in cmd.params)]
    assert not missing, f"commands without --threads: {missing}"


def test_the_option_sets_the_thread_count_before_the_command_runs(tmp_path, capsys):
    try:
        assert run_app(["demo", "--n", "2", "--nfe", "2", "--out", str(tmp_path / "d"), "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@pytest.fixture
def machine(monkeypatch):
    """A machine of `cpus` CPUs, of which this process may use `usable`, with a 1-minute load average `load`."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)

    def set_machine(cpus: int, usable: int, load: float):
        monkeypatch.setattr(os, "cpu_count", lambda: cpus)
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(usable)))
        monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    return set_machine


def test_the_default_leaves_the_cores_that_other_processes_load(machine):
    machine(2, 2, 0.1)
    assert idle_cpus() == 2
    machine(2, 2, 1.0)  # one busy process: one thread, so no thread waits for a core at every barrier
    assert idle_cpus() == 1
    machine(2, 2, 7.0)
    assert idle_cpus() == 1  # never fewer than one
    machine(64, 4, 32.0)  # a share of a big host: half of its load falls on our 4 CPUs
    assert idle_cpus() == 2
    assert cpu_threads(None, Dist()) <= 2


def test_threads_asked_for_win(machine, monkeypatch):
    machine(2, 2, 5.0)
    assert cpu_threads(3, Dist()) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert cpu_threads(None, Dist()) == 2


def test_the_executable_makes_openmp_threads_sleep_when_they_wait():
    code = ("import os, sys; sys.argv = ['unmix', '--version']\n"
            "from unmix.cli.entry import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(os.environ['OMP_WAIT_POLICY'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split()[-1] == "PASSIVE"
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env={**env, "OMP_WAIT_POLICY": "ACTIVE"}).stdout
    assert kept.split()[-1] == "ACTIVE"  # the user's own setting stays
