import json
import math

import pytest
import torch

from unmix.data import Dataset, load_dataset
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.model import load
from unmix.store import checkpoint as ckpt
from unmix.training.config import TrainConfig
from unmix.training.trainer import resume, start

TINY_UNET = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [1]}


def _cfg(tmp_path, **kw):
    base = dict(out=str(tmp_path / "run"), threads=1, log_every=5, checkpoint_every=1000, sample_every=10**6,
                nfe=4, warmup_steps=5)
    return TrainConfig(**{**base, **kw})


def _digits(n):
    ds = load_dataset("digits")
    return Dataset("digits", ds.data[:n], ds.labels[:n], ds.class_names)


def test_tiny_mlp_overfits_four_points(tmp_path):
    pts = torch.tensor([[0.8, 0.8], [-0.8, 0.8], [0.8, -0.8], [-0.8, -0.8]])
    ds = Dataset("four", pts.repeat(16, 1))
    cfg = _cfg(tmp_path, steps=600, batch_size=64, lr=3e-3, ema_halflife_kimg=2.0,
               net={"hidden": 64, "depth": 2}, log_every=100)
    start(cfg, ds).train(progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    # low noise levels are learnable to ~0; at high noise the loss keeps the posterior's irreducible variance
    assert log[-1]["loss_q0"] < 0.3 * log[0]["loss_q0"] and log[-1]["loss_q1"] < 0.3 * log[0]["loss_q1"]
    x = load(tmp_path / "run").sample(200, nfe=16)
    nearest = torch.cdist(x, pts).min(1).values
    assert nearest.median() < 0.08 and (nearest < 0.2).float().mean() > 0.9, nearest
    assert (tmp_path / "run" / "samples.png").is_file()


def test_tiny_unet_overfits_two_digits(tmp_path):
    ds = _digits(2)
    cfg = _cfg(tmp_path, steps=150, batch_size=16, lr=5e-3, ema_halflife_kimg=0.5,
               net=dict(TINY_UNET, channels=16, attn_levels=[]), log_every=50)
    start(cfg, ds).train(progress=False)
    log = [json.loads(line) for line in (tmp_path / "run" / "stats.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < 0.5 * log[0]["loss"]
    x = load(tmp_path / "run").sample(8, nfe=16)
    err = ((x[:, None] - ds.batch(torch.arange(2))[0][None]) ** 2).flatten(2).mean(2).min(1).values
    assert err.max() < 0.05, err  # every sample is (close to) one of the two training images


def _tensors(path):
    c = ckpt.open_checkpoint(path)
    state = c.training_state()
    opt = {f"{i}.{k}": v for i, s in state["optimizer"]["state"].items() for k, v in s.items()}
    return {**{f"m.{k}": v for k, v in c.weights("model").items()}, **{f"e.{k}": v for k, v in c.weights("ema").items()},
            **opt, "gen": state["generator"], "rng": state["torch_rng"]}


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    ds = _digits(64)
    common = dict(batch_size=8, net=dict(TINY_UNET, dropout=0.1), cond="label", seed=3, checkpoint_every=6)
    start(_cfg(tmp_path / "a", steps=12, **common), ds).train(progress=False)
    start(_cfg(tmp_path / "b", steps=6, **common), ds).train(progress=False)
    resume(tmp_path / "b" / "run", ds, steps=12).train(progress=False)
    a, b = _tensors(tmp_path / "a" / "run"), _tensors(tmp_path / "b" / "run")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert ckpt.open_checkpoint(tmp_path / "b" / "run").step == 12
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "stats.jsonl").read_text().splitlines()]
    assert steps == [5, 6, 10, 12]  # the log continues without duplicates


def test_resume_refuses_changed_training_settings(tmp_path):
    ds = _digits(16)
    start(_cfg(tmp_path, steps=2, batch_size=4, net=TINY_UNET), ds).train(progress=False)
    with pytest.raises(UnmixError, match="batch_size=8 differs from the resumed run's 4"):
        resume(tmp_path / "run", ds, steps=4, batch_size=8)
    with pytest.raises(UnmixError, match="already holds checkpoints; pass resume=True"):
        start(_cfg(tmp_path, steps=4, batch_size=4, net=TINY_UNET), ds)
    with pytest.raises(UnmixError, match="no checkpoint in"):
        resume(tmp_path / "other", ds, steps=4)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    ds = _digits(16)
    cfg = _cfg(tmp_path, steps=4, batch_size=4, net=TINY_UNET, checkpoint_every=2)
    start(cfg, ds).train(progress=False)
    good = ckpt.list_checkpoints(tmp_path / "run")
    before = {p: p.read_bytes() for c in good for p in c.iterdir()}
    bad = Dataset("digits", torch.full_like(ds.data, math.nan), ds.labels, ds.class_names)
    with pytest.raises(UnmixError, match="training diverged.*checkpoint-00000004.*untouched.*resume=True, lr="):
        resume(tmp_path / "run", bad, steps=8).train(progress=False)
    assert ckpt.list_checkpoints(tmp_path / "run") == good
    assert {p: p.read_bytes() for c in good for p in c.iterdir()} == before


@pytest.mark.parametrize("recipe", ["ddpm", "v"])
def test_other_recipes_train_and_sample(tmp_path, recipe):
    ds = load_dataset("ring")
    cfg = _cfg(tmp_path, steps=30, batch_size=32, recipe=recipe, min_snr_gamma=5.0, cond="label",
               net={"hidden": 32, "depth": 1}, log_every=10)
    start(cfg, ds).train(progress=False)
    model = load(tmp_path / "run")
    assert model.recipe.name == recipe and model.recipe.min_snr_gamma == 5.0 and model.num_classes == 8
    x = model.sample(4, nfe=4, labels=3)
    assert x.shape == (4, 2) and torch.isfinite(x).all()


# Karras et al. 2022, table 1, written out: (c_skip, c_out, c_in) for each recipe's parameterisation.
TABLE_1 = {
    "edm": lambda s, sd=0.5: (sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), 1 / (s**2 + sd**2).sqrt()),
    "ddpm": lambda s: (torch.ones_like(s), -s, 1 / (1 + s**2).sqrt()),  # eps prediction
    "v": lambda s: (1 / (1 + s**2), -s / (1 + s**2).sqrt(), 1 / (1 + s**2).sqrt()),
}


def test_recipe_targets_make_the_denoiser_exact():
    """The network output that reproduces x0 under each recipe's closed-form coefficients has zero loss, and the
    recipe's denoiser maps it to x0: a wrong scaling anywhere makes both fail."""
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g)
    for name in ("edm", "ddpm", "v"):
        recipe = Recipe.from_name(name, min_snr_gamma=5.0 if name == "v" else 0.0)
        sigma = recipe.sample_sigma(6, g)
        c_skip, c_out, c_in = (c[:, None] for c in TABLE_1[name](sigma))

        class Oracle(torch.nn.Module):
            def forward(self, x_in, c_noise, cond=None, c_in=c_in, c_skip=c_skip, c_out=c_out):
                x = x_in / c_in
                return (x0 - c_skip * x) / c_out

        den = recipe.denoiser(Oracle())
        assert recipe.loss(den, x0, sigma, noise).abs().max() < 1e-8
        assert torch.allclose(den(x0 + sigma[:, None] * noise, sigma), x0, atol=1e-5)


def test_loss_quartiles_split_the_training_distribution_evenly():
    for name in ("edm", "ddpm"):
        recipe = Recipe.from_name(name)
        q = recipe.quantile(recipe.sample_sigma(40_000, torch.Generator().manual_seed(1)))
        counts = torch.bincount((q * 4).long().clamp(0, 3), minlength=4) / 40_000
        assert torch.allclose(counts, torch.full((4,), 0.25), atol=0.01), (name, counts)


def test_min_snr_weight_for_eps_is_min_snr_over_snr():
    class Zero(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            return torch.zeros_like(x)

    recipe = Recipe.from_name("ddpm", min_snr_gamma=5.0)
    sigma = torch.tensor([0.1, 1.0, 3.0])
    loss = recipe.loss(recipe.denoiser(Zero()), torch.zeros(3, 1), sigma, torch.ones(3, 1))  # eps error = 1
    snr = sigma ** -2
    assert torch.allclose(loss, snr.clamp(max=5.0) / snr)


def test_three_line_python_api(tmp_path):
    import unmix

    model = unmix.train("moons", steps=3, out=str(tmp_path / "m"), threads=1, batch_size=16, progress=False,
                        net={"hidden": 16, "depth": 1}, nfe=2)
    images = model.sample(5, seed=1, nfe=3)
    assert images.shape == (5, 2) and torch.equal(images, unmix.sample(tmp_path / "m", 5, seed=1, nfe=3))
    assert unmix.save_grid(images, tmp_path / "pts.png").is_file()
    assert isinstance(unmix.load(tmp_path / "m"), unmix.Model)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    ds = _digits(32)
    logs = []
    for accum in (1, 4):
        start(_cfg(tmp_path / str(accum), steps=2, batch_size=8, accum=accum, net=TINY_UNET, log_every=1), ds).train(
            progress=False)
        logs.append([json.loads(line) for line in (tmp_path / str(accum) / "run" / "stats.jsonl").read_text().splitlines()])
    for a, b in zip(*logs):  # same samples, same loss, same (accumulated) gradient
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
