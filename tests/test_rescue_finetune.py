"""Rescue and fine-tuning (issue 17).

Rescue: a run that a too-large learning rate drives to a non-finite loss stops with its last good checkpoint
untouched; `--resume --lr X` continues from that checkpoint and trains on, exactly as if the failed attempt had
never happened. Fine-tuning: `--init CHECKPOINT` starts a new run at step 0 from a trained model's weights, on new
data (here a folder of generated 8x8 greyscale PNGs), with a fresh optimiser.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hostile_fixtures import TINY_FLAGS, assert_one_error, cli, digit_like, visible_lines
from PIL import Image
from safetensors.torch import load_file

NO_PREVIEWS = ["--sample-every", "1000000"]


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def stats(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines() if line.strip()]


def weights(checkpoint: Path, which: str = "model") -> dict[str, torch.Tensor]:
    return load_file(checkpoint / f"{which}.safetensors")


def four_good_steps(out: Path, capsys) -> None:
    code, _, err = cli(capsys, "train", "--out", out, "--steps", "4", "--checkpoint-every", "4", *TINY_FLAGS,
                       *NO_PREVIEWS)
    assert code == 0, err


def diverge(out: Path, capsys) -> str:
    """Continue at lr 10 without clipping or warm-up: the loss overflows within a few steps (deterministic on CPU)."""
    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--steps", "40", "--lr", "10", "--grad-clip", "0",
                       "--warmup-steps", "0")
    assert code == 2 and "Traceback" not in err, err
    return err


def test_a_diverged_run_is_rescued_with_a_lower_learning_rate(tmp_path, capsys):
    out = tmp_path / "run"
    four_good_steps(out, capsys)
    good = digest(out / "checkpoint-00000004")

    err = diverge(out, capsys)
    message = next(line for line in visible_lines(err) if "error: training diverged" in line)
    assert "checkpoint-00000004" in message and "--resume" in message and "--lr" in message, message
    assert digest(out / "checkpoint-00000004") == good, "the last good checkpoint must stay as it was"
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-00000004"]

    code, _, err = cli(capsys, "train", "--out", out, "--resume", "--steps", "12", "--lr", "1e-3", "--grad-clip", "1",
                       *NO_PREVIEWS)
    assert code == 0, err
    log = stats(out)
    assert [r["step"] for r in log] == list(range(1, 13)), "the log continues from step 4, without the failed steps"
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in log)
    assert all(r["lr"] <= 1e-3 for r in log[4:]), "the rescue ran at the new learning rate"
    stored = json.loads((out / "checkpoint-00000012" / "config.json").read_text())["train"]
    assert stored["lr"] == 1e-3 and stored["grad_clip"] == 1.0
    assert all(torch.isfinite(t).all() for t in weights(out / "checkpoint-00000012").values())

    # the failed attempt left no trace: a run resumed straight from step 4 with the same settings is identical
    ref = tmp_path / "reference"
    four_good_steps(ref, capsys)
    code, _, err = cli(capsys, "train", "--out", ref, "--resume", "--steps", "12", "--lr", "1e-3", "--grad-clip", "1",
                       *NO_PREVIEWS)
    assert code == 0, err
    for which in ("model", "ema"):
        a, b = weights(out / "checkpoint-00000012", which), weights(ref / "checkpoint-00000012", which)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), which


def test_the_divergence_message_is_the_last_line(tmp_path, capsys):
    out = tmp_path / "run"
    four_good_steps(out, capsys)
    lines = visible_lines(diverge(out, capsys))
    assert lines[-1].startswith("error: training diverged") and sum("error:" in line for line in lines) == 1, lines


def test_resume_refuses_what_a_rescue_cannot_change(tmp_path, capsys):
    out = tmp_path / "run"
    four_good_steps(out, capsys)
    for flag, value in (("--channels", "16"), ("--recipe", "v"), ("--batch-size", "16"), ("--seed", "9")):
        code, _, err = cli(capsys, "train", "--out", out, "--resume", flag, value)
        assert_one_error(code, err, "differs", "--init")


# -- fine-tuning ----------------------------------------------------------------------------------------------------
def image_folder(root: Path, n: int = 24, classes: int = 0) -> Path:
    """n 8x8 greyscale PNGs unlike digits (bright squares on noise, shifted), in `classes` subfolders if any."""
    root.mkdir(parents=True)
    for i in range(n):
        a = np.roll(digit_like(8, seed=i), shift=(i % 3, i % 4), axis=(0, 1))
        folder = root / f"class{i % classes}" if classes else root
        folder.mkdir(exist_ok=True)
        Image.fromarray(a).save(folder / f"img{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A digits run of 6 steps, with previews off: the model to fine-tune."""
    from hostile_fixtures import tiny_run

    return tiny_run(tmp_path_factory.mktemp("finetune"), "digits", steps=6)


def test_fine_tuning_starts_at_step_0_from_the_checkpoints_weights(trained, tmp_path, capsys):
    source = sorted(trained.glob("checkpoint-*"))[-1]
    data = image_folder(tmp_path / "my images")
    out = tmp_path / "tuned"
    # a learning rate of 1e-12 moves no weight measurably: the first checkpoint shows where training started
    code, _, err = cli(capsys, "train", "--init", source, "--data", f"folder:{data}", "--size", "8", "--out", out,
                       "--steps", "1", "--lr", "1e-12", "--batch-size", "8", "--threads", "1", "--nfe", "2",
                       *NO_PREVIEWS)
    assert code == 0, err
    assert f"from {source}" in err, "the announcement names the checkpoint it starts from"
    first = out / "checkpoint-00000001"
    assert first.is_dir(), "a fine-tuning run counts its own steps from 0"
    start, tuned = weights(source), weights(first)
    assert start.keys() == tuned.keys()
    assert all(torch.allclose(start[k], tuned[k], atol=1e-8, rtol=0) for k in start)
    config = json.loads((first / "config.json").read_text())
    assert config["net"] == json.loads((source / "config.json").read_text())["net"], "init keeps the network"
    assert config["data"]["name"].startswith("folder:") and config["data"]["size"] == 24
    assert config["train"]["init"] == str(source) and config["images_seen"] == 8
    assert [r["step"] for r in stats(out)] == [1]


def test_fine_tuning_trains_on_the_new_images_and_samples(trained, tmp_path, capsys):
    data = image_folder(tmp_path / "bilder ü")
    out = tmp_path / "tuned"
    code, _, err = cli(capsys, "train", "--init", trained, "--data", f"folder:{data}", "--size", "8", "--out", out,
                       "--steps", "6", "--lr", "1e-3", "--warmup-steps", "1", "--batch-size", "8", "--threads", "1",
                       "--nfe", "2", "--log-every", "1", *NO_PREVIEWS)
    assert code == 0, err
    log = stats(out)
    assert [r["step"] for r in log] == list(range(1, 7)) and all(math.isfinite(r["loss"]) for r in log)
    assert log[0]["lr"] == 1e-3, "a fresh optimiser with the new learning rate (no warm-up left over)"
    start, tuned = weights(sorted(trained.glob("checkpoint-*"))[-1]), weights(out / "checkpoint-00000006")
    assert any(not torch.equal(start[k], tuned[k]) for k in start), "the weights moved"
    code, _, err = cli(capsys, "sample", out, "--n", "3", "--nfe", "2", "--out", tmp_path / "s",
                       "--save-npy", tmp_path / "s" / "x.npy")
    assert code == 0, err
    x = np.load(tmp_path / "s" / "x.npy")
    assert x.shape == (3, 1, 8, 8) and np.isfinite(x).all()


@pytest.mark.parametrize("case", ["rgb-folder", "other-size", "network-flag", "cond-other-classes"])
def test_fine_tuning_refuses_what_does_not_fit_the_checkpoint(case, tmp_path, capsys):
    from hostile_fixtures import tiny_run

    runs = {"cond-other-classes": lambda: tiny_run(tmp_path, "cond", cond="label", steps=1)}
    source = runs.get(case, lambda: tiny_run(tmp_path, "digits", steps=1))()
    data = image_folder(tmp_path / "imgs", classes=3 if case == "cond-other-classes" else 0)
    if case == "rgb-folder":
        for p in data.glob("*.png"):
            Image.open(p).convert("RGB").save(p)
    extra = {"rgb-folder": [], "other-size": ["--size", "4"], "network-flag": ["--channels", "16"],
             "cond-other-classes": ["--cond", "label"]}[case]
    words = {"rgb-folder": ["shape"], "other-size": ["shape"], "network-flag": ["--init"],
             "cond-other-classes": ["classes"]}[case]
    code, _, err = cli(capsys, "train", "--init", source, "--data", f"folder:{data}", "--out", tmp_path / "tuned",
                       "--steps", "1", "--batch-size", "8", "--threads", "1", "--size", "8", *extra)
    assert_one_error(code, err, *words)
    assert not (tmp_path / "tuned").exists()
