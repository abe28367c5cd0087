import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unmix.cli.sample_cmd  # noqa: F401  (registers the commands)
import unmix.cli.train_cmd  # noqa: F401
from unmix.cli.app import run_app

TINY = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--attn", "1", "--batch-size", "8",
        "--threads", "1", "--nfe", "4", "--log-every", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def cli(capsys, *args):
    code = run_app([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny trained digits run, shared by the tests below (which must never change it)."""
    out = tmp_path_factory.mktemp("cli") / "run"
    assert run_app(["train", "--out", str(out), "--steps", "4", *TINY]) == 0
    return out


def test_train_writes_checkpoint_stats_and_grid(run_dir):
    assert (run_dir / "checkpoint-00000004" / "ema.safetensors").is_file()
    assert (run_dir / "samples.png").is_file() and (run_dir / "samples" / "step-00000004.png").is_file()
    log = [json.loads(line) for line in (run_dir / "stats.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert {"loss", "loss_q0", "loss_q3", "grad_norm", "lr", "kimg"} <= set(log[0])


def test_sample_grid_singles_npy_gif_and_seeds(run_dir, tmp_path, capsys):
    out = tmp_path / "s"
    code, _, err = cli(capsys, "sample", run_dir, "--n", 5, "--nfe", 4, "--out", out, "--save-npy", out / "x.npy",
                       "--gif", out / "reverse.gif")
    assert code == 0, err
    x = np.load(out / "x.npy")
    assert x.shape == (5, 1, 8, 8) and x.dtype == np.float32 and x.min() >= -1 and x.max() <= 1
    assert (out / "grid.png").is_file() and len(list(out.glob("*_seed*.png"))) == 5
    gif = Image.open(out / "reverse.gif")
    assert gif.n_frames >= 4  # one frame per denoiser call, then the result (Pillow merges it if equal to the last)
    code, _, _ = cli(capsys, "sample", run_dir, "--seeds", "3,4", "--nfe", 4, "--out", tmp_path / "t",
                     "--save-npy", tmp_path / "t.npy", "--no-singles")
    assert code == 0
    np.testing.assert_allclose(np.load(tmp_path / "t.npy"), x[3:5], rtol=0, atol=1e-5)  # i's seed alone, to rounding


def test_info_describes_the_checkpoint(run_dir, capsys):
    code, out, _ = cli(capsys, "info", run_dir)
    assert code == 0
    assert "step         4" in out and "unet" in out and "edm" in out and "digits (1797 items" in out
    code, out, _ = cli(capsys, "info", run_dir / "checkpoint-00000004", "--json")
    assert json.loads(out)["net"]["channels"] == 8


def test_dry_run_prints_the_config_and_trains_nothing(tmp_path, capsys):
    code, out, _ = cli(capsys, "train", "--out", tmp_path / "dry", "--dry-run", "--recipe", "v", "--cond", "label")
    assert code == 0
    cfg = json.loads(out)
    assert cfg["recipe"]["name"] == "v" and cfg["train"]["label_dropout"] == 0.1 and cfg["net"]["num_classes"] == 10
    assert cfg["train"]["steps"] == 1000 and cfg["parameters"] > 0
    assert not (tmp_path / "dry").exists()


def test_sigma_data_reaches_the_stored_recipe(tmp_path, capsys):
    code, out, _ = cli(capsys, "train", "--data", "swissroll", "--out", tmp_path / "dry", "--dry-run", "--sigma-data", "1")
    assert code == 0 and json.loads(out)["recipe"]["sigma_data"] == 1.0
    code, _, err = cli(capsys, "train", "--out", tmp_path / "dry", "--dry-run", "--sigma-data", "-1")
    assert code == 2 and "Invalid value for '--sigma-data'" in err


def test_noise_level_distribution_and_patch_reach_the_checkpoint_config(tmp_path, capsys):
    code, out, _ = cli(capsys, "train", "--out", tmp_path / "dry", "--dry-run", "--p-mean", "-0.5", "--p-std", "1.5",
                       "--patch", "2", "--channel-mult", "1,2", "--attn", "1")
    d = json.loads(out)
    assert code == 0 and (d["recipe"]["p_mean"], d["recipe"]["p_std"], d["net"]["patch_size"]) == (-0.5, 1.5, 2)
    for bad, message in [(["--p-std", "0"], "Invalid value for '--p-std'"), (["--p-mean", "nan"], "Invalid value for '--p-mean'"),
                         (["--p-mean", "0", "--recipe", "ddpm"], "needs --recipe 'edm'"),
                         (["--patch", "3"], "8x8 pixels do not split into 3x3 patches"),
                         (["--patch", "0"], "Invalid value for '--patch'")]:
        code, _, err = cli(capsys, "train", "--out", tmp_path / "dry", "--dry-run", *bad)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_bad_inputs_give_one_line_exit_2_and_leave_checkpoints_alone(run_dir, tmp_path, capsys):
    before = digest(run_dir)
    (tmp_path / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    (tmp_path / "empty").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "small.png")
    (tmp_path / "smalldir").mkdir()
    Image.new("RGB", (10, 10)).save(tmp_path / "smalldir" / "a.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    Image.new("RGB", (64, 64), (1, 2, 3)).save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    cases = {
        ("train", "--out", run_dir, "--steps", "-5"): "Invalid value for '--steps'",
        ("train", "--out", run_dir, "--steps", "-5", "--resume"): "Invalid value for '--steps'",
        ("train", "--out", run_dir, "--data", "mnist"): "unknown dataset 'mnist'",
        ("train", "--out", run_dir, "--data", f"folder:{tmp_path / 'empty'}"): "holds no images",
        ("train", "--out", run_dir, "--data", f"folder:{tmp_path / 'smalldir'}"): "smaller than the requested size 32",
        ("train", "--out", run_dir, "--steps", "8", *TINY): "already holds checkpoints",
        ("train", "--out", run_dir, "--resume", "--batch-size", "3"): "--batch-size 3 differs",
        ("sample", tmp_path / "model.pkl"): "pickle / torch.save file",
        ("info", tmp_path / "model.pkl"): "pickle / torch.save file",
        ("sample", tmp_path / "empty"): "holds no checkpoint",
        ("sample", run_dir, "--n", "0"): "Invalid value for '--n'",
        ("sample", run_dir, "--sampler", "magic"): "'magic' is not one of",
        ("sample", run_dir, "--label", "3"): "trained without labels",
        ("noise", "--image", tmp_path / "corrupt.png"): "cannot read image",
        ("noise", "--image", tmp_path / "truncated.png"): "cannot read image",
        ("noise", "--image", tmp_path / "small.png"): "smaller than --size 64",
        ("noise", "--data", "mnist"): "unknown dataset",
        ("train", "--out", run_dir, "--bogus-flag"): "No such option: --bogus-flag",
    }
    for args, expected in cases.items():
        code, _, err = cli(capsys, *args)
        assert code == 2, (args, err)
        assert expected in one_error_line(err), (args, err)
    assert digest(run_dir) == before


def test_class_conditional_training_and_sampling(tmp_path, capsys):
    out = tmp_path / "cond"
    code, _, err = cli(capsys, "train", "--data", "digits", "--cond", "label", "--out", out, "--steps", "2", *TINY)
    assert code == 0, err
    code, _, err = cli(capsys, "sample", out, "--n", "3", "--nfe", "2", "--label", "7", "--out", tmp_path / "s")
    assert code == 0, err
    code, out_text, _ = cli(capsys, "info", out)
    assert "classes      0, 1, 2" in out_text


def test_noise_strip_and_gif(tmp_path, capsys):
    Image.new("RGB", (80, 60), (250, 20, 20)).save(tmp_path / "red.png")
    for args in (["--image", tmp_path / "red.png", "--size", "32"], ["--data", "digits", "--index", "5"],
                 ["--data", "moons", "--frames", "3"]):
        out = tmp_path / f"n{len(args)}"
        code, _, err = cli(capsys, "noise", *args, "--out", out)
        assert code == 0, err
        assert (out / "strip.png").is_file() and Image.open(out / "noise.gif").n_frames > 10


def test_python_dash_m_entry_point_and_exit_code(tmp_path):
    (tmp_path / "w.pt").write_bytes(pickle.dumps([1]))
    r = subprocess.run([sys.executable, "-m", "unmix", "sample", str(tmp_path / "w.pt")], capture_output=True,
                       text=True, env=ENV)
    assert r.returncode == 2 and one_error_line(r.stderr) and "never unpickles" in r.stderr
    r = subprocess.run([sys.executable, "-m", "unmix", "--help"], capture_output=True, text=True, env=ENV)
    assert r.returncode == 0 and all(c in r.stdout for c in ("train", "sample", "noise", "info"))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "unmix", "train", "--data", "moons", "--out", str(out), "--steps", "1000000",
           "--threads", "1", "--log-every", "5", "--checkpoint-every", "1000000", "--batch-size", "16"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.time() + 60
    while not (out / "stats.jsonl").is_file() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "continue with: unmix train --out" in err and "Traceback" not in err
    from unmix.store.checkpoint import open_checkpoint

    c = open_checkpoint(out)
    assert c.step >= 5
    assert run_app(["train", "--out", str(out), "--resume", "--steps", str(c.step + 3), "--threads", "1"]) == 0
    assert open_checkpoint(out).step == c.step + 3


def test_thread_count_follows_flag_then_omp_num_threads(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    code, out, _ = cli(capsys, "train", "--out", tmp_path / "dry", "--dry-run")
    assert code == 0 and json.loads(out)["threads"] == 1
    code, out, _ = cli(capsys, "train", "--out", tmp_path / "dry", "--dry-run", "--threads", "3")
    assert code == 0 and json.loads(out)["threads"] == 3
