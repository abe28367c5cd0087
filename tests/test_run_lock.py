"""One writer per run folder (issue 17): while a training runs, a second training or a `--resume` into its folder
is refused in one line naming the holder, and the first run goes on untouched to its end; a lock file left by a
process that no longer exists is reported and taken over.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hostile_fixtures import ENV, TINY_FLAGS, assert_one_error, cli, visible_lines

from unmix.errors import UnmixError
from unmix.training.runlock import LOCK_NAME, RunLock, ensure_free

# Batches of 128 make each step of the tiny U-Net slow enough (about a tenth of a second) that the second attempts
# land while the first run trains.
FIRST = ["--steps", "40", "--checkpoint-every", "20", "--log-every", "1", "--sample-every", "1000000",
         "--batch-size", "128", "--seed", "3"]


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, "the first training ended early"
        assert time.monotonic() < deadline, "the first training did not get there in time"
        time.sleep(0.05)


def logged_steps(out: Path) -> list[int]:
    path = out / "stats.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def test_a_second_training_is_refused_while_the_first_runs_on(tmp_path, capsys):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "unmix", "train", "--out", str(out), *TINY_FLAGS, *FIRST],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    try:
        wait_for(lambda: logged_steps(out), first)  # it holds the lock from before its first step

        # a new run into the same folder: refused by the lock (or, once the first has a checkpoint, by the rule
        # that a new run never writes over another's checkpoints)
        code, _, err = cli(capsys, "train", "--out", out, *TINY_FLAGS, "--steps", "5")
        assert code == 2 and "Traceback" not in err, err
        last = visible_lines(err)[-1]
        assert f"in use by process {first.pid}" in last or "already holds checkpoints" in last, err
        assert not (out / "checkpoint-00000005").exists()

        # a --resume once the first has a checkpoint: past the "already holds checkpoints" rule, the lock refuses it
        wait_for(lambda: (out / "checkpoint-00000020").is_dir(), first)
        code, _, err = cli(capsys, "train", "--out", out, "--resume", "--steps", "100", "--threads", "1")
        assert code == 2 and "Traceback" not in err, err
        assert f"in use by process {first.pid}" in visible_lines(err)[-1], err
        assert socket.gethostname() in err

        _, first_err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, first_err
    assert logged_steps(out) == list(range(1, 41)), "every step of the first run is logged once, in order"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-00000020", "checkpoint-00000040"]
    assert not (out / LOCK_NAME).read_text().strip(), "a run that ends releases its lock"
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_a_refused_second_training_prints_only_its_error(tmp_path, capsys):
    out = tmp_path / "run"
    with RunLock(out):  # this process holds it, as a running training would
        code, _, err = cli(capsys, "train", "--out", out, *TINY_FLAGS, "--steps", "1")
    assert_one_error(code, err, "in use by process", str(os.getpid()))


def test_the_lock_is_held_while_training_and_released_after(tmp_path):
    with RunLock(tmp_path / "run") as lock:
        holder = json.loads(lock.path.read_text())
        assert holder == {"pid": os.getpid(), "host": socket.gethostname()}
        with pytest.raises(UnmixError, match=f"in use by process {os.getpid()}"):
            ensure_free(tmp_path / "run")
        with pytest.raises(UnmixError, match="in use by"), RunLock(tmp_path / "run"):
            pass
    ensure_free(tmp_path / "run")  # released: no error
    with RunLock(tmp_path / "run"):
        pass


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.mark.parametrize("content", ["holder", "garbage", "empty"])
def test_a_stale_lock_is_reported_and_taken_over(content, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    pid = dead_pid()
    text = {"holder": json.dumps({"pid": pid, "host": socket.gethostname()}), "garbage": "\x00not json{",
            "empty": ""}[content]
    (out / LOCK_NAME).write_text(text)
    code, _, err = cli(capsys, "train", "--out", out, *TINY_FLAGS, "--steps", "2", "--sample-every", "1000000")
    assert code == 0, err
    assert "Traceback" not in err
    if content == "holder":
        assert f"had a lock from process {pid}" in err and "taking it over" in err
    assert (out / "checkpoint-00000002").is_dir()
    assert not (out / LOCK_NAME).read_text().strip()


@pytest.mark.slow
def test_a_killed_training_leaves_a_lock_that_the_next_run_takes_over(tmp_path, capsys):
    """kill -9 skips every clean-up: the kernel drops the flock, the file still names the dead process."""
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "unmix", "train", "--out", str(out), *TINY_FLAGS, "--steps",
                             "100000", "--checkpoint-every", "5", "--sample-every", "1000000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        wait_for(lambda: (out / "checkpoint-00000005").is_dir(), proc)
    finally:
        proc.kill()
        proc.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == proc.pid
    last = int(sorted(out.glob("checkpoint-*"))[-1].name.split("-")[1])
    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--steps", str(last + 1), "--threads", "1")
    assert code == 0, err
    assert f"had a lock from process {proc.pid}" in err
    assert (out / f"checkpoint-{last + 1:08d}").is_dir()
