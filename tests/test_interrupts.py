"""Ctrl-C anywhere ends a command with exit code 130 and one line saying so (issue 17): during start-up, while
Python and PyTorch are still importing, and in the middle of the work, for `sample`, `eval`, `nll` and `train`.
So `unmix train && unmix sample` stops at an interrupt instead of carrying on.

These run real processes (a signal to this test process would stop pytest); each costs a few seconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hostile_fixtures import ENV, TINY_FLAGS, session_runs, visible_lines

UNMIX = Path(sys.executable).parent / "unmix"  # the console script installed with the package


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return session_runs(tmp_path_factory)["run"]


def commands(run: Path, tmp: Path) -> dict[str, list[str]]:
    """Each command with enough work that it is still busy when the signal comes."""
    return {
        "sample": ["sample", str(run), "--n", "4096", "--nfe", "64", "--out", str(tmp / "s")],
        "eval": ["eval", str(run), "--n", "4096", "--nfe", "64"],
        "nll": ["nll", str(run), "--n", "1797", "--steps", "20", "--batch-size", "4"],
        "train": ["train", "--out", str(tmp / "r"), "--steps", "100000", *TINY_FLAGS],
    }


def interrupt(argv: list[str], after: float, until: str | None = None, err_file: Path | None = None,
              timeout: float = 60) -> tuple[int, str]:
    """Start ARGV in its own process group, and `after` seconds later (or once stderr shows `until`) send SIGINT to
    the group, as a terminal's Ctrl-C does; (exit code, stderr)."""
    if err_file is None:
        fd, name = tempfile.mkstemp(suffix=".err")
        os.close(fd)
        err_file = Path(name)
    with open(err_file, "w") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=ENV, text=True,
                                start_new_session=True, preexec_fn=terminal_signals)
        try:
            if until is None:
                time.sleep(after)
            else:
                deadline = time.monotonic() + timeout
                while until not in read(err_file) and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                assert proc.poll() is None, f"finished before it could be interrupted:\n{read(err_file)}"
                assert until in read(err_file), f"no {until!r} within {timeout} s:\n{read(err_file)}"
            os.killpg(proc.pid, signal.SIGINT)
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"still running {timeout} s after SIGINT (the interrupt was lost):\n"
                                     f"{read(err_file)[-2000:]}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group: a shell chain's children too
                proc.wait()
    text = read(err_file)
    err_file.unlink(missing_ok=True)
    return code, text


def terminal_signals() -> None:
    """Ctrl-C as a terminal's foreground job gets it: a test run started in the background (`pytest &` without job
    control) hands its children SIGINT ignored, and an ignored SIGINT is rightly not acted on."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def read(path: Path) -> str:
    """The file as written, carriage returns kept (a progress bar redraws its line with them)."""
    return path.read_bytes().decode("utf-8", errors="replace")


def assert_interrupted(code: int, err: str) -> None:
    assert code == 130, f"exit {code}, stderr:\n{err}"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = visible_lines(err)
    if any("stopped by SIGINT" in line for line in lines):  # train's own stop, after its first step
        assert "continue with: unmix train" in err, err
        return
    assert len(lines) == 1 and "interrupted" in lines[0], f"expected one line saying 'interrupted':\n{err}"


@pytest.mark.parametrize("after", [0.5, 1.5])
@pytest.mark.parametrize("command", ["sample", "eval", "nll", "train"])
def test_ctrl_c_at_start_up_exits_130_with_one_line(command, after, run, tmp_path):
    """The console script, interrupted while it imports (PyTorch alone takes seconds)."""
    code, err = interrupt([str(UNMIX), *commands(run, tmp_path)[command]], after)
    assert_interrupted(code, err)
    assert not list(tmp_path.rglob("checkpoint-*")), "an interrupted start-up wrote a checkpoint"


@pytest.mark.slow
@pytest.mark.parametrize("after", [0.2, 0.4, 0.7, 1.0, 1.3, 1.8, 2.2, 3.0, 4.0])
def test_ctrl_c_at_many_moments_of_start_up(after, run, tmp_path):
    """An interrupt while PyTorch initialises NumPy can be swallowed by C code (and leave NumPy half-imported):
    the entry point must not depend on where in the imports it lands."""
    code, err = interrupt([str(UNMIX), *commands(run, tmp_path)["sample"]], after)
    assert_interrupted(code, err)


@pytest.mark.parametrize("command", ["sample", pytest.param("eval", marks=pytest.mark.slow),
                                     pytest.param("nll", marks=pytest.mark.slow)])
def test_ctrl_c_during_the_work_exits_130_with_one_line(command, run, tmp_path):
    """`python -m unmix`, interrupted once its progress bar shows that the work has started."""
    bar = {"sample": "sample", "eval": "eval: sample", "nll": "nll"}[command]
    code, err = interrupt([sys.executable, "-m", "unmix", *commands(run, tmp_path)[command]], 0, until=f"{bar}:")
    assert_interrupted(code, err)
    assert not (tmp_path / "s" / "grid.png").exists()


@pytest.mark.slow
def test_ctrl_c_during_training_saves_and_says_how_to_continue(tmp_path):
    out = tmp_path / "r"
    argv = [sys.executable, "-m", "unmix", "train", "--out", str(out), "--steps", "100000", *TINY_FLAGS]
    code, err = interrupt(argv, 0, until="step/s")
    assert code == 130 and "Traceback" not in err, err
    assert f"continue with: unmix train --out {out} --resume" in err
    assert list(out.glob("checkpoint-*")), "an interrupted training must save a checkpoint"
    assert not (out / ".lock").read_text().strip(), "the lock must be released"


def test_interrupted_command_stops_a_shell_chain(run, tmp_path):
    """`unmix sample ... && touch NEXT`: an interrupt ends the chain."""
    marker = tmp_path / "NEXT"
    chain = f"'{UNMIX}' " + " ".join(f"'{a}'" for a in commands(run, tmp_path)["sample"]) + f" && touch '{marker}'"
    code, err = interrupt(["bash", "-c", chain], 1.0)
    assert code != 0 and not marker.exists(), err
    assert "interrupted" in err and "Traceback" not in err, err
