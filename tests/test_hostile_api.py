"""Hostile calls to the Python API (issue 17): a wrong type, range, shape or path is an UnmixError with one
sentence naming the argument, never a bare TypeError / IndexError / RuntimeError from deep inside.

Each case is a function of a context `c` (c.model, c.cond: tiny trained models of this session; c.run: the run
folder; c.tmp: the test's own folder; c.img: a folder of good and bad images).
"""
from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hostile_fixtures import make_images, pickle_file, session_runs, torch_zip_file
from PIL import Image

import unmix
from unmix import api, samplers
from unmix.analytic import digits_mixture
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.nets import build_net

G = torch.Generator


def _train(**settings):
    return lambda c: unmix.train(**{"out": str(c.tmp / "run"), "progress": False, **settings})


def _tiny_train(**settings):
    """A tiny network with one bad setting: whatever fails must fail before the first step."""
    return _train(**{"steps": 1, "batch_size": 8, "net": {"channels": 8, "channel_mult": [1, 2],
                                                          "num_res_blocks": 1, "attn_levels": [1]}, **settings})


# (id, call, words the message must contain)
CASES = [
    # -- unmix.train: every setting typed and ranged before any work --------------------------------------------
    ("train-steps-text", _train(steps="ten"), ["steps"]),
    ("train-steps-0", _train(steps=0), ["steps"]),
    ("train-steps-negative", _train(steps=-1), ["steps"]),
    ("train-steps-float", _train(steps=2.5), ["steps"]),
    ("train-steps-bool", _train(steps=True), ["steps"]),
    ("train-lr-nan", _train(lr=math.nan), ["lr"]),
    ("train-lr-negative", _train(lr=-1e-3), ["lr"]),
    ("train-lr-text", _train(lr="0.1"), ["lr"]),
    ("train-minutes-0", _train(minutes=0), ["minutes"]),
    ("train-minutes-inf", _train(minutes=math.inf), ["minutes"]),
    ("train-batch-0", _train(batch_size=0), ["batch_size"]),
    ("train-batch-float", _train(batch_size=8.0), ["batch_size"]),
    ("train-grad-clip-inf", _train(grad_clip=math.inf), ["grad_clip"]),
    ("train-warmup-negative", _train(warmup_steps=-1), ["warmup_steps"]),
    ("train-keep-0", _train(keep=0), ["keep"]),
    ("train-threads-0", _train(threads=0), ["threads"]),
    ("train-seed-text", _train(seed="x"), ["seed"]),
    ("train-label-dropout-1", _train(label_dropout=1.0), ["label_dropout"]),
    ("train-unknown-setting", _train(epochs=3), ["epochs"]),
    ("train-data-unknown", _train(data="mnist"), ["mnist"]),
    ("train-data-not-str", lambda c: unmix.train(5, out=str(c.tmp / "run")), ["data"]),
    ("train-net-not-dict", _train(net="unet"), ["net"]),
    ("train-net-unknown-key", _tiny_train(net={"bogus": 1}), ["bogus"]),
    ("train-net-channels-text", _tiny_train(net={"channels": "eight"}), ["channels"]),
    ("train-cond-unknown", _train(cond="text"), ["cond"]),
    ("train-cond-unlabelled", _train(cond="label", data="swissroll", steps=1), ["label"]),
    ("train-recipe-unknown", _train(recipe="sdxl"), ["sdxl"]),
    ("train-precision-unknown", _train(precision="fp8"), ["precision"]),
    ("train-sampler-unknown", _train(sampler="magic"), ["magic"]),
    ("train-device-missing-gpu", _tiny_train(device="cuda:7"), ["cuda"]),
    ("train-accum-indivisible", _tiny_train(accum=3), ["accum"]),
    ("train-out-is-file", lambda c: unmix.train(out=str(c.file), steps=1), ["out"]),
    ("train-resume-nothing", _train(resume=True), ["no checkpoint"]),
    ("train-init-missing", _tiny_train(init="no/such/checkpoint"), ["does not exist"]),
    ("train-init-pickle", lambda c: unmix.train(out=str(c.tmp / "run"), steps=1,
                                                init=str(pickle_file(c.tmp / "w.pt", c.tmp / "RAN"))), ["pickle"]),
    ("train-init-with-network", lambda c: unmix.train(out=str(c.tmp / "r"), steps=1, init=str(c.run),
                                                      net={"channels": 16}), ["init"]),
    ("train-into-existing-run", lambda c: unmix.train(out=str(c.run), steps=3), ["already holds checkpoints"]),
    # -- unmix.load ----------------------------------------------------------------------------------------------
    ("load-missing", lambda c: unmix.load(c.tmp / "nothing"), ["does not exist"]),
    ("load-empty-folder", lambda c: unmix.load(c.tmp), ["no checkpoint"]),
    ("load-text-file", lambda c: unmix.load(c.file), ["not an unmix checkpoint"]),
    ("load-pickle", lambda c: unmix.load(pickle_file(c.tmp / "w.pkl", c.tmp / "RAN")), ["pickle"]),
    ("load-torch-zip", lambda c: unmix.load(torch_zip_file(c.tmp / "w.pt", c.tmp / "RAN")), ["pickle"]),
    ("load-weights-unknown", lambda c: unmix.load(c.run, weights="best"), ["best"]),
    ("load-device-unknown", lambda c: unmix.load(c.run, device="tpu"), ["tpu"]),
    ("load-device-missing-gpu", lambda c: unmix.load(c.run, device="cuda:7"), ["cuda"]),
    ("load-not-a-path", lambda c: unmix.load(42), ["42"]),
    # -- Model.sample -------------------------------------------------------------------------------------------
    ("sample-n-0", lambda c: c.model.sample(n=0), ["n"]),
    ("sample-n-negative", lambda c: c.model.sample(-2), ["-2"]),
    ("sample-n-text", lambda c: c.model.sample("3"), ["3"]),
    ("sample-n-float", lambda c: c.model.sample(2.5), ["2.5"]),
    ("sample-n-bool", lambda c: c.model.sample(True), ["True"]),
    ("sample-seed-text", lambda c: c.model.sample(2, seed="x", nfe=2), ["seed"]),
    ("sample-seeds-count", lambda c: c.model.sample(2, seeds=[1], nfe=2), ["seeds"]),
    ("sample-seeds-text", lambda c: c.model.sample(2, seeds=["a", "b"], nfe=2), ["seed"]),
    ("sample-generators-count", lambda c: c.model.sample(3, generator=[G(), G()], nfe=2), ["generator"]),
    ("sample-generator-and-seeds", lambda c: c.model.sample(2, seeds=[1, 2], generator=G(), nfe=2), ["generator"]),
    ("sample-generator-not-one", lambda c: c.model.sample(2, generator="seed", nfe=2), ["generator"]),
    ("sample-sampler-unknown", lambda c: c.model.sample(2, sampler="magic"), ["magic"]),
    ("sample-nfe-0", lambda c: c.model.sample(2, nfe=0), ["nfe"]),
    ("sample-nfe-float", lambda c: c.model.sample(2, nfe=2.5), ["nfe"]),
    ("sample-nfe-text", lambda c: c.model.sample(2, nfe="4"), ["nfe"]),
    ("sample-batch-size-0", lambda c: c.model.sample(2, nfe=2, batch_size=0), ["batch_size"]),
    ("sample-labels-unconditional", lambda c: c.model.sample(2, nfe=2, labels=3), ["labels"]),
    ("sample-device-unknown", lambda c: c.model.sample(2, nfe=2, device="tpu"), ["tpu"]),
    ("sample-unknown-option", lambda c: c.model.sample(2, nfe=2, temperature=0.5), ["temperature"]),
    ("sample-label-out-of-range", lambda c: c.cond.sample(2, nfe=2, labels=99), ["99"]),
    ("sample-label-negative", lambda c: c.cond.sample(2, nfe=2, labels=-1), ["-1"]),
    ("sample-label-unknown-name", lambda c: c.cond.sample(2, nfe=2, labels="eleven"), ["eleven"]),
    ("sample-label-count", lambda c: c.cond.sample(2, nfe=2, labels=[1, 2, 3]), ["3 labels"]),
    ("sample-label-float", lambda c: c.cond.sample(2, nfe=2, labels=1.5), ["1.5"]),
    ("sample-guidance-nan", lambda c: c.cond.sample(2, nfe=2, labels=1, guidance=math.nan), ["guidance"]),
    ("sample-guidance-negative", lambda c: c.cond.sample(2, nfe=2, labels=1, guidance=-1.0), ["guidance"]),
    ("sample-guidance-text", lambda c: c.cond.sample(2, nfe=2, labels=1, guidance="strong"), ["guidance"]),
    # -- unmix.sample (models, paths and plain denoisers) ---------------------------------------------------------
    ("api-sample-missing-path", lambda c: unmix.sample(str(c.tmp / "nothing"), 2), ["does not exist"]),
    ("api-sample-not-a-denoiser", lambda c: unmix.sample(42, (2, 1, 8, 8)), ["42"]),
    ("api-sample-shape-not-a-shape", lambda c: unmix.sample(digits_mixture(), "2x1x8x8"), ["shape"]),
    ("api-sample-shape-mismatch", lambda c: unmix.sample(digits_mixture(), (2, 1, 4, 4), nfe=2), ["shape"]),
    ("api-sample-shape-zero", lambda c: unmix.sample(digits_mixture(), (0, 1, 8, 8), nfe=2), ["shape"]),
    ("api-sample-sampler-unknown", lambda c: unmix.sample(digits_mixture(), (2, 1, 8, 8), sampler="magic"), ["magic"]),
    ("api-sample-nfe-0", lambda c: unmix.sample(digits_mixture(), (2, 1, 8, 8), nfe=0), ["nfe"]),
    ("api-sample-seed-and-generator", lambda c: unmix.sample(digits_mixture(), (2, 1, 8, 8), nfe=2, seed=1,
                                                             generator=G()), ["seed"]),
    ("samplers-get-unknown", lambda c: samplers.get_sampler("magic"), ["magic"]),
    # -- unmix.save_grid -------------------------------------------------------------------------------------------
    ("save-grid-1d", lambda c: unmix.save_grid(torch.zeros(3), c.tmp / "g.png"), ["[3]"]),
    ("save-grid-3-columns", lambda c: unmix.save_grid(torch.zeros(2, 3), c.tmp / "g.png"), ["[2, 3]"]),
    ("save-grid-5-channels", lambda c: unmix.save_grid(torch.zeros(1, 5, 8, 8), c.tmp / "g.png"), ["5"]),
    ("save-grid-empty", lambda c: unmix.save_grid(torch.zeros(0, 1, 8, 8), c.tmp / "g.png"), ["[0, 1, 8, 8]"]),
    ("save-grid-list", lambda c: unmix.save_grid([1, 2], c.tmp / "g.png"), ["list"]),
    ("save-grid-jpg", lambda c: unmix.save_grid(torch.zeros(1, 1, 8, 8), c.tmp / "g.jpg"), [".png"]),
    ("save-grid-folder", lambda c: unmix.save_grid(torch.zeros(1, 1, 8, 8), c.img / "a folder.png"), ["folder"]),
    ("save-grid-nrow-0", lambda c: unmix.save_grid(torch.zeros(2, 1, 8, 8), c.tmp / "g.png", nrow=0), ["nrow"]),
    ("save-grid-nrow-text", lambda c: unmix.save_grid(torch.zeros(2, 1, 8, 8), c.tmp / "g.png", nrow="2"), ["nrow"]),
    ("save-grid-under-a-file", lambda c: unmix.save_grid(torch.zeros(1, 1, 8, 8), c.file / "g.png"), ["g.png"]),
    # -- inpaint and edit --------------------------------------------------------------------------------------------
    ("inpaint-image-shape", lambda c: api.inpaint(c.model, torch.zeros(3, 8, 8), c.mask), ["shape"]),
    ("inpaint-image-nan", lambda c: api.inpaint(c.model, torch.full((1, 8, 8), math.nan), c.mask), ["finite"]),
    ("inpaint-image-range", lambda c: api.inpaint(c.model, torch.full((1, 8, 8), 255.0), c.mask), ["[-1, 1]"]),
    ("inpaint-image-list", lambda c: api.inpaint(c.model, [[0.0]], c.mask), ["image"]),
    ("inpaint-mask-shape", lambda c: api.inpaint(c.model, c.image, torch.ones(1, 4, 4, dtype=torch.bool)), ["mask"]),
    ("inpaint-mask-float", lambda c: api.inpaint(c.model, c.image, torch.rand(1, 8, 8)), ["mask"]),
    ("inpaint-mask-none", lambda c: api.inpaint(c.model, c.image, None), ["mask"]),
    ("inpaint-mask-all-known", lambda c: api.inpaint(c.model, c.image, torch.zeros(1, 8, 8, dtype=torch.bool)),
     ["mask"]),
    ("inpaint-image-corrupt-file", lambda c: api.inpaint(c.model, c.img / "corrupt.png", c.img / "mask.png"),
     ["corrupt.png"]),
    ("inpaint-image-folder", lambda c: api.inpaint(c.model, c.img / "a folder.png", c.img / "mask.png"),
     ["folder"]),
    ("inpaint-mask-wrong-size-file", lambda c: api.inpaint(c.model, c.img / "good.png", c.img / "mask_wrong.png"),
     ["mask_wrong.png"]),
    ("inpaint-method-unknown", lambda c: api.inpaint(c.model, c.image, c.mask, method="magic", nfe=2), ["magic"]),
    ("inpaint-n-0", lambda c: api.inpaint(c.model, c.image, c.mask, n=0, nfe=2), ["0"]),
    ("inpaint-not-a-model", lambda c: api.inpaint(42, c.image, c.mask), ["Model"]),
    ("edit-strength-2", lambda c: api.edit(c.model, c.image, 2.0, nfe=2), ["strength"]),
    ("edit-strength-negative", lambda c: api.edit(c.model, c.image, -0.5, nfe=2), ["strength"]),
    ("edit-strength-nan", lambda c: api.edit(c.model, c.image, math.nan, nfe=2), ["strength"]),
    ("edit-strength-text", lambda c: api.edit(c.model, c.image, "half", nfe=2), ["strength"]),
    ("edit-image-shape", lambda c: api.edit(c.model, torch.zeros(1, 4, 4), 0.5, nfe=2), ["shape"]),
    ("edit-image-missing-file", lambda c: api.edit(c.model, c.img / "no_such_image.png", 0.5), ["no_such_image"]),
    ("edit-n-0", lambda c: api.edit(c.model, c.image, 0.5, n=0, nfe=2), ["0"]),
    # -- evaluate and nll ---------------------------------------------------------------------------------------------
    ("evaluate-n-0", lambda c: unmix.evaluate(c.model, n=0, nfe=2), ["0"]),
    ("evaluate-n-too-few", lambda c: unmix.evaluate(c.model, n=3, nfe=2), ["too few"]),
    ("evaluate-data-other", lambda c: unmix.evaluate(c.model, n=100, nfe=2, data="moons"), ["moons"]),
    ("evaluate-sampler-unknown", lambda c: unmix.evaluate(c.model, n=100, sampler="magic"), ["magic"]),
    ("evaluate-not-a-model", lambda c: unmix.evaluate(3.14), ["Model"]),
    ("nll-method-unknown", lambda c: unmix.nll(c.model, "exact"), ["exact"]),
    ("nll-n-0", lambda c: unmix.nll(c.model, n=0), ["n"]),
    ("nll-n-text", lambda c: unmix.nll(c.model, n="5"), ["n"]),
    ("nll-vlb-on-edm", lambda c: unmix.nll(c.model, "vlb", n=2), ["vlb"]),
    ("nll-steps-0", lambda c: unmix.nll(c.model, n=2, steps=0), ["step"]),
    ("nll-trace-unknown", lambda c: unmix.nll(c.model, n=2, steps=1, trace="approx"), ["approx"]),
    ("nll-sigma-min-negative", lambda c: unmix.nll(c.model, n=2, steps=1, sigma_min=-1.0), ["sigma_min"]),
    ("nll-batch-0", lambda c: unmix.nll(c.model, n=2, steps=1, batch_size=0), ["batch_size"]),
    # -- forward_pictures ---------------------------------------------------------------------------------------------
    ("forward-image-folder", lambda c: unmix.forward_pictures(c.tmp / "f", image=c.img / "a folder.png"), ["folder"]),
    ("forward-image-truncated", lambda c: unmix.forward_pictures(c.tmp / "f", image=c.img / "truncated.png", size=8),
     ["truncated.png"]),
    ("forward-index-negative", lambda c: unmix.forward_pictures(c.tmp / "f", index=-1), ["index"]),
    ("forward-index-huge", lambda c: unmix.forward_pictures(c.tmp / "f", index=10**6), ["index"]),
    ("forward-frames-1", lambda c: unmix.forward_pictures(c.tmp / "f", frames=1), ["frames"]),
    ("forward-sigma-nan", lambda c: unmix.forward_pictures(c.tmp / "f", sigma_max=math.nan), ["sigma_max"]),
    ("forward-gif-suffix", lambda c: unmix.forward_pictures(c.tmp / "f", gif=c.tmp / "x.png"), [".gif"]),
    ("forward-data-unknown", lambda c: unmix.forward_pictures(c.tmp / "f", data="mnist"), ["mnist"]),
    ("forward-out-is-file", lambda c: unmix.forward_pictures(c.file), ["file"]),
    ("forward-gif-under-a-file", lambda c: unmix.forward_pictures(c.tmp / "f", gif=c.file / "x.gif"), ["notes.txt"]),
    # -- settings a hand-edited config.json or a direct call can carry ----------------------------------------------
    ("net-channel-mult-text", lambda c: build_net({"kind": "unet", "channel_mult": [1, "2"]}), ["channel_mult"]),
    ("net-dropout-nan", lambda c: build_net({"kind": "unet", "dropout": math.nan}), ["dropout"]),
    ("net-hidden-bool", lambda c: build_net({"kind": "mlp", "hidden": True}), ["hidden"]),
    ("recipe-sigma-data-nan", lambda c: Recipe(sigma_data=math.nan), ["sigma_data"]),
    ("recipe-sigma-data-negative", lambda c: Recipe.from_dict({"sigma_data": -0.5}), ["sigma_data"]),
    ("recipe-p-std-0", lambda c: Recipe(p_std=0.0), ["p_std"]),
    ("recipe-num-steps-text", lambda c: Recipe.from_name("ddpm", num_steps="1000"), ["num_steps"]),
    ("recipe-sigma-range-reversed", lambda c: Recipe(sigma_min=2.0, sigma_max=1.0), ["sigma_min"]),
    ("recipe-parameterization-unknown", lambda c: Recipe(parameterization="score"), ["score"]),
    # -- more Model calls -----------------------------------------------------------------------------------------
    ("sample-seed-bool", lambda c: c.model.sample(2, seed=True, nfe=2), ["seed"]),
    ("sample-seeds-not-a-list", lambda c: c.model.sample(2, seeds=7, nfe=2), ["seeds"]),
    ("sample-option-of-another-sampler", lambda c: c.model.sample(2, sampler="ddim", nfe=2, churn=1.0), ["eta"]),
    ("sample-labels-not-a-list", lambda c: c.cond.sample(2, nfe=2, labels=object()), ["labels"]),
    ("sample-label-bool", lambda c: c.cond.sample(2, nfe=2, labels=[True, False]), ["True"]),
    ("sample-guidance-bool", lambda c: c.cond.sample(2, nfe=2, labels=1, guidance=True), ["guidance"]),
    ("model-inpaint-mask-path", lambda c: c.model.inpaint(c.image, str(c.img / "mask.png"), n=1), ["mask"]),
    ("model-inpaint-image-list", lambda c: c.model.inpaint([[0.0]], c.mask, n=1), ["image"]),
    ("model-edit-seed-text", lambda c: c.model.edit(c.image, 0.5, n=1, seed="x"), ["seed"]),
    ("nll-batch-float", lambda c: unmix.nll(c.model, n=2, steps=1, batch_size=2.5), ["batch_size"]),
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    runs = session_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp("hostile_api")
    img = root / "img"
    make_images(img)
    (root / "notes.txt").write_text("an existing file\n")
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 4:] = True
    return SimpleNamespace(model=unmix.load(runs["run"]), cond=unmix.load(runs["cond"]), run=runs["run"], img=img,
                           file=root / "notes.txt", mask=mask, image=torch.linspace(-1, 1, 64).reshape(1, 8, 8))


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_call_raises_unmix_error(case, ctx, tmp_path, monkeypatch):
    name, call, words = case
    monkeypatch.chdir(tmp_path)  # a default out= (runs/<data>) lands here, never in the repository
    c = SimpleNamespace(**vars(ctx), tmp=tmp_path)
    with pytest.raises(UnmixError) as info:
        call(c)
    message = str(info.value)
    assert "\n" not in message.strip(), message
    for word in words:
        assert word.lower() in message.lower(), f"{word!r} not named in: {message}"
    assert not (tmp_path / "RAN").exists(), "a pickle was unpickled"
    assert not list(tmp_path.rglob("checkpoint-*")), "a checkpoint was written before the error"


def test_sample_accepts_one_generator_or_one_per_sample(ctx):
    """generator= replaces the seeds: one generator gives a reproducible batch, one per sample equals the seeds."""
    a = ctx.model.sample(3, nfe=2, generator=torch.Generator().manual_seed(7))
    b = ctx.model.sample(3, nfe=2, generator=torch.Generator().manual_seed(7))
    c = ctx.model.sample(3, nfe=2, generator=torch.Generator().manual_seed(8))
    assert a.shape == (3, 1, 8, 8) and torch.equal(a, b) and not torch.equal(a, c)
    per_sample = ctx.model.sample(3, nfe=2, generator=[torch.Generator().manual_seed(s) for s in (4, 5, 6)])
    assert torch.equal(per_sample, ctx.model.sample(3, nfe=2, seeds=[4, 5, 6]))
    assert torch.equal(per_sample, ctx.model.sample(3, nfe=2, seed=4))


def test_sample_through_the_module_function_accepts_a_generator(ctx):
    x = unmix.sample(ctx.model, 2, nfe=2, generator=torch.Generator().manual_seed(1))
    y = unmix.sample(ctx.run, 2, nfe=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, y) and x.min() >= -1 and x.max() <= 1


@pytest.mark.parametrize("name", ["rgba.png", "la.png", "palette.png", "sixteen.png", "cmyk.jpg", "big.png",
                                  "tiny.png", "wide.png", "onebit.png"])
def test_odd_image_files_are_read_at_the_models_size(ctx, name):
    x = api.edit(ctx.model, ctx.img / name, 0.3, n=1, nfe=2)
    assert x.shape == (1, 1, 8, 8) and torch.isfinite(x).all()


def test_save_grid_accepts_images_and_points(tmp_path):
    assert unmix.save_grid(torch.zeros(4, 3, 8, 8), tmp_path / "ü dir" / "g.png").is_file()
    assert unmix.save_grid(torch.randn(50, 2).clamp(-1, 1), tmp_path / "points.png").is_file()
    assert unmix.save_grid(torch.zeros(4, 1, 8, 8), str(tmp_path / "with space.png"), nrow=2).is_file()


def test_images_with_nan_are_still_drawn(tmp_path):
    """NaN pixels (a diverged model) draw as something rather than crash the grid writer."""
    x = torch.zeros(2, 1, 8, 8)
    x[0, 0, 0, 0] = math.nan
    out = unmix.save_grid(x, tmp_path / "g.png")
    assert np.asarray(Image.open(out)).shape == (68, 134)  # two 8x8 digits enlarged 8x, 2-pixel grey gaps


def test_an_unknown_name_on_the_package_is_an_attribute_error():
    with pytest.raises(AttributeError):
        unmix.no_such_function  # noqa: B018


def test_models_reload_bit_for_bit(ctx, tmp_path):
    """Model.save then unmix.load, into a folder with spaces and unicode: the same samples."""
    path = ctx.model.save(tmp_path / "my model ü")
    assert torch.equal(unmix.load(path).sample(2, nfe=2, seed=3), ctx.model.sample(2, nfe=2, seed=3))
    assert isinstance(path, Path)
