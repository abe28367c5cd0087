"""`unmix inpaint` / `unmix edit` end to end on a tiny random checkpoint, and every bad input -> one line, exit 2."""
import numpy as np
import pytest
import torch
from PIL import Image

import unmix.cli.commands  # noqa: F401  (registers the commands)
from unmix.cli.app import run_app
from unmix.losses import Recipe
from unmix.model import Model
from unmix.nets import UNet, UNetConfig


def _checkpoint(folder, num_classes):
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, channels=8, channel_mult=(1,), num_res_blocks=1, attn_levels=(),
                          num_classes=num_classes))
    data = {"name": "digits", "shape": [1, 8, 8], "size": 10, "class_names": [str(i) for i in range(num_classes)]}
    return Model(net, Recipe.from_name("edm"), data).save(folder / "checkpoint")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("control")
    img = np.zeros((16, 16), np.uint8)
    img[4:12, 6:10] = 255
    Image.fromarray(img).save(root / "digit.png")
    mask = np.zeros((16, 16), np.uint8)
    mask[8:] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.fromarray(mask[:8]).save(root / "small_mask.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "black.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(root / "white.png")
    return {"root": root, "cond": _checkpoint(root / "cond", 10), "plain": _checkpoint(root / "plain", 0)}


def run(args, capsys):
    code = run_app([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_inpaint_writes_completions_and_keeps_known_pixels(files, capsys):
    r = files["root"]
    code, out, err = run(["inpaint", files["cond"], r / "digit.png", "--mask", r / "mask.png", "--n", 3, "--nfe", 4,
                          "--label", 7, "--out", r / "out", "--save-npy", r / "out/x.npy"], capsys)
    assert code == 0, err
    x = np.load(r / "out/x.npy")
    assert x.shape == (3, 1, 8, 8)
    seen = np.asarray(Image.open(r / "digit.png").resize((8, 8), Image.LANCZOS), np.float32) / 127.5 - 1
    assert np.allclose(x[:, 0, :4], seen[None, :4], atol=1e-6)  # top half kept (up to the resize)
    assert (r / "out/inpaint.png").is_file() and (r / "out/inpaint-002.png").is_file()
    assert "denoiser calls" in out


def test_edit_strength_zero_returns_the_image(files, capsys):
    r = files["root"]
    code, _, err = run(["edit", files["plain"], r / "digit.png", "--strength", 0, "--n", 2, "--out", r / "e",
                        "--save-npy", r / "e/x.npy"], capsys)
    assert code == 0, err
    x = np.load(r / "e/x.npy")
    code, _, err = run(["edit", files["plain"], r / "digit.png", "--strength", 0.5, "--n", 2, "--nfe", 3,
                        "--out", r / "e2"], capsys)
    assert code == 0, err
    assert x.shape == (2, 1, 8, 8) and np.array_equal(x[0], x[1])
    assert (r / "e2/edit.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["inpaint", "{cond}", "{r}/digit.png", "--mask", "{r}/small_mask.png"], "must be the same size"),
    (["inpaint", "{cond}", "{r}/digit.png", "--mask", "{r}/white.png"], "no known pixels"),
    (["inpaint", "{cond}", "{r}/digit.png", "--mask", "{r}/black.png"], "no pixels to fill in"),
    (["inpaint", "{cond}", "{r}/digit.png", "--mask", "{r}/mask.png", "--label", "11"], "label 11 out of range"),
    (["inpaint", "{plain}", "{r}/digit.png", "--mask", "{r}/mask.png", "--guidance", "3"], "trained without labels"),
    (["inpaint", "{cond}", "{r}/digit.png", "--mask", "{r}/mask.png", "--method", "blur"], "'blur' is not one of"),
    (["inpaint", "{cond}", "{r}/nothing.png", "--mask", "{r}/mask.png"], "does not exist"),
    (["edit", "{plain}", "{r}/digit.png", "--strength", "1.5"], "Invalid value for '--strength'"),
    (["edit", "{plain}", "{r}/digit.png", "--strength", "-0.5"], "Invalid value for '--strength'"),
    (["edit", "{plain}", "{r}/digit.png", "--strength", "0.5", "--label", "1"], "trained without labels"),
    (["edit", "{r}/digit.png", "{r}/digit.png", "--strength", "0.5"], "not an unmix checkpoint"),
])
def test_bad_input_is_one_line_and_exit_2(files, capsys, args, message):
    import re

    args = [a.format(r=files["root"], cond=files["cond"], plain=files["plain"]) for a in args]
    code, _, err = run(args, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and re.search(message, err), err
