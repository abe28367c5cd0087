"""Training on a user's own folder (issue 34): before training starts it says what it found, converted and
skipped, then how long the run will take at the speed of its first steps (with a warning past a few hours);
--preview-data shows the images as the network sees them; a folder on a CPU gets the CPU-sized preset."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hostile_fixtures import ENV, TINY_FLAGS, cli
from PIL import Image

from unmix.data import load_dataset
from unmix.data.folder import folder_report
from unmix.training.config import run_preset
from unmix.training.log import estimate_lines


@pytest.fixture
def photos(tmp_path):
    """Two classes of 40-50 px pictures (one greyscale, one with transparency), a corrupt file, one file at the top."""
    rng = np.random.default_rng(0)
    for i in range(4):
        (tmp_path / "photos" / "cats").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 48 + i, 3), dtype=np.uint8)).save(tmp_path / "photos" / "cats" / f"{i}.png")
    dogs = tmp_path / "photos" / "dogs"
    dogs.mkdir()
    Image.fromarray(rng.integers(0, 255, (40, 40), dtype=np.uint8)).save(dogs / "grey.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 4), dtype=np.uint8)).save(dogs / "clear.png")
    (dogs / "broken.jpg").write_bytes(b"not a jpeg")
    Image.new("RGB", (40, 40)).save(tmp_path / "photos" / "stray.png")
    return tmp_path / "photos"


def test_the_report_counts_sizes_conversions_and_skips(photos):
    lines = folder_report(load_dataset(f"folder:{photos}", 16).info["found"])
    assert lines[0].startswith("found 6 images in 2 classes (cats 4, dogs 2); sizes 40x40 to 51x40")
    assert "16x16 RGB" in lines[0]
    assert lines[1] == "converted to RGB: 1 greyscale, 1 with transparency (transparency composited on white)"
    assert lines[2].startswith("skipped 1 unreadable (listed above) and 1 at the top level")


def test_a_folder_run_reports_and_estimates_before_its_first_checkpoint(photos, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "unmix", "train", "--data", f"folder:{photos}", "--size", "16", "--out", str(out),
           "--steps", "100000000", *TINY_FLAGS]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=ENV)
    lines, deadline = [], time.monotonic() + 240
    try:
        while not any(line.startswith("warning: that is more than") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, "\n".join(lines)
            lines.append(proc.stderr.readline().split("\r")[-1].strip())
        assert not list(out.glob("checkpoint-*")), "the estimate came after a checkpoint"
    finally:
        proc.send_signal(signal.SIGTERM)  # the run saves and stops
        proc.communicate(timeout=120)
    text = "\n".join(lines)
    assert "broken.jpg" in text and "found 6 images in 2 classes" in text and "skipped 1 unreadable" in text
    assert "preset folder-cpu" in text
    estimate = next(line for line in lines if line.startswith("time estimate:"))
    assert "s/step, 99999996 steps to go" in estimate and "hours more" in estimate
    assert "--minutes 30" in lines[-1] and "--resume" in lines[-1]  # in the command line's words


def test_preview_data_writes_the_images_as_the_network_sees_them(photos, tmp_path, capsys):
    sheet = tmp_path / "sheet.png"
    code, _, err = cli(capsys, "train", "--data", f"folder:{photos}", "--size", "16", "--preview-data", sheet,
                       "--dry-run", "--out", tmp_path / "r")
    assert code == 0, err
    img = Image.open(sheet)
    assert img.mode == "RGB" and img.size == (8 * 4 * 16 + 9 * 2, 4 * 16 + 2 * 2)  # a row of 8 places, 16 px shown 4x
    assert not (tmp_path / "r").exists()
    code, _, err = cli(capsys, "train", "--preview-data", tmp_path / "sheet.jpg", "--dry-run")
    assert code == 2 and "must end in .png" in err


def test_a_folder_on_a_cpu_gets_the_cpu_preset_and_a_30_minute_budget(photos, tmp_path, capsys):
    assert run_preset("folder:x", "cpu") == "folder-cpu" and run_preset("folder:x", "cuda") == "folder:x"
    code, out, err = cli(capsys, "train", "--data", f"folder:{photos}", "--dry-run", "--device", "cpu",
                         "--out", tmp_path / "r")
    assert code == 0, err
    d = json.loads(out)
    assert d["net"]["patch_size"] == 2 and d["net"]["channels"] == 64 and d["train"]["batch_size"] == 32
    assert d["train"]["minutes"] == 30 and d["train"]["steps"] is None and d["parameters"] < 6e6


def test_the_estimate_names_a_budget_when_the_run_is_long():
    (line,) = estimate_lines(2.0, 4, 1000, None, 10.0)
    assert line == "time estimate: 2 s/step, 996 steps to go: about 33 minutes more"
    long = estimate_lines(6.0, 4, 20000, None, 30.0)
    assert "about 33.3 hours" in long[0] and "minutes=30" in long[1]
    (budget,) = estimate_lines(1.0, 4, 20000, 30.0, 10.0)
    assert budget == "time estimate: 1 s/step, so the 30-minute budget ends the run near step 1794 of 20000"
