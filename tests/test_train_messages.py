"""What `unmix train` and `unmix info` say when a new user's run goes wrong, and short runs that stay short (issue 34,
items 4 and 5)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hostile_fixtures import TINY_FLAGS, TINY_NET, assert_one_error, cli, copy_checkpoint, tiny_run
from PIL import Image
from safetensors.torch import load_file, save_file

from unmix.training import trainer
from unmix.training.config import TrainConfig
from unmix.training.runlock import RunLock


def _photos(folder, n=4, size=40):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_latent_dry_run_before_the_autoencoder_exists_shows_its_first_stage(tmp_path, capsys):
    photos = _photos(tmp_path / "photos")
    code, out, err = cli(capsys, "train", "--latent", "--dry-run", "--data", f"folder:{photos}", "--size", "16",
                         "--out", tmp_path / "lat")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["stage 1: autoencoder"]["net"]["kind"] == "autoencoder"
    assert "once stage 1 has trained it" in shown["stage 2: diffusion"]
    assert not (tmp_path / "lat").exists()  # a dry run writes nothing


def test_resume_into_a_folder_still_training_says_it_is_busy(tmp_path, capsys):
    out = tmp_path / "busy"
    with RunLock(out):  # a run that holds its folder and has no checkpoint yet
        code, _, err = cli(capsys, "train", "--resume", "--out", out, "--steps", "4")
    line = assert_one_error(code, err, "in use by process")
    assert "without resume" not in line


def test_a_size_the_unet_cannot_halve_is_refused_with_the_nearest_sizes(tmp_path, capsys):
    photos = _photos(tmp_path / "photos")
    code, _, err = cli(capsys, "train", "--data", f"folder:{photos}", "--size", "30", "--dry-run",
                       "--out", tmp_path / "r")
    assert_one_error(code, err, "--size 30 in 2x2 patches", "15-pixel grid", "--size 28 or --size 32", "--channel-mult")
    code, out, err = cli(capsys, "train", "--data", f"folder:{photos}", "--size", "32", "--dry-run",
                         "--out", tmp_path / "r")
    assert code == 0, err
    code, out, err = cli(capsys, "train", "--data", f"folder:{photos}", "--size", "30", "--channel-mult", "1,2",
                         "--dry-run", "--out", tmp_path / "r")
    assert code == 0 and json.loads(out)["net"]["channel_mult"] == [1, 2], err  # levels given: the user's choice


def test_info_on_weights_of_nan_is_one_line_and_exit_2(tmp_path, capsys):
    run = tiny_run(tmp_path)
    ckpt = copy_checkpoint(run / "checkpoint-00000002", tmp_path / "nan")
    weights = load_file(ckpt / "ema.safetensors")
    weights = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in weights.items()}
    save_file(weights, ckpt / "ema.safetensors")  # readable, header and all, but every value NaN
    code, out, err = cli(capsys, "info", ckpt)
    assert_one_error(code, err, "ema.safetensors", "NaN")
    assert out.splitlines()[-1].startswith("health       DAMAGED")


def test_sample_on_a_weight_holding_nan_is_one_line_and_exit_2(tmp_path, capsys):
    """One NaN in one tensor of the EMA file, written through safetensors like a real checkpoint: `unmix sample`
    refuses it before drawing anything (it would otherwise write a grid of NaN clamped to black)."""
    run = tiny_run(tmp_path)
    ckpt = copy_checkpoint(run / "checkpoint-00000002", tmp_path / "nan")
    weights = load_file(ckpt / "ema.safetensors")
    name = next(k for k, v in weights.items() if v.is_floating_point() and v.numel() > 1)
    weights[name] = weights[name].clone().flatten().index_fill(0, torch.tensor([0]), float("nan")).view_as(weights[name])
    save_file(weights, ckpt / "ema.safetensors")
    drawn = tmp_path / "drawn"
    code, _, err = cli(capsys, "sample", ckpt, "--n", "2", "--nfe", "2", "--threads", "1", "--out", drawn)
    assert_one_error(code, err, "ema.safetensors", "NaN", name, "damaged")
    assert not drawn.exists()


def _tiny(out, **settings):
    return TrainConfig(data="digits", out=str(out), batch_size=8, lr=1e-3, warmup_steps=1, net=dict(TINY_NET),
                       sample_every=10**6, nfe=2, threads=1, device="cpu", **settings)


def test_no_preview_draws_no_grid(tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--out", tmp_path / "r", "--steps", "2", "--no-preview", *TINY_FLAGS)
    assert code == 0, err
    assert (tmp_path / "r" / "checkpoint-00000002").is_dir() and not (tmp_path / "r" / "samples.png").exists()


def test_the_final_grid_draws_only_the_rows_that_fit_its_time(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "FINAL_PREVIEW_SECONDS", 0.0)  # no time at all: the first row alone
    trainer.start(_tiny(tmp_path / "short", steps=2)).train(progress=False)
    short = Image.open(tmp_path / "short" / "samples.png")
    monkeypatch.setattr(trainer, "FINAL_PREVIEW_SECONDS", 1e9)
    trainer.start(_tiny(tmp_path / "whole", steps=2)).train(progress=False)
    whole = Image.open(tmp_path / "whole" / "samples.png")
    assert short.width == whole.width and 7 * short.height < whole.height  # 1 row of 8 against 8 rows


@pytest.mark.parametrize("flag", ["--preview", "--no-preview"])
def test_help_says_what_the_final_preview_costs(flag, capsys):
    code, out, _ = cli(capsys, "train", "--help")
    assert code == 0 and flag in out and "10 seconds" in " ".join(out.split())
