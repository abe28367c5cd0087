"""A latent model is a Model: it samples latents and decodes them to images of the data's shape, inpaints with the
known pixels returned exactly, saves and loads bit-identically, and the command line trains both stages
(train-autoencoder, then train --latent) into a folder `unmix sample` reads like any other."""
import json
import shutil

import numpy as np
import pytest
import torch

import unmix.cli.distill_cmd  # noqa: F401  (registers the commands)
import unmix.cli.latent_cmd  # noqa: F401
import unmix.cli.sample_cmd  # noqa: F401
import unmix.cli.train_cmd  # noqa: F401
from unmix.cli.app import run_app
from unmix.data import Dataset
from unmix.encoders import AutoencoderEncoder
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.model import Model, load
from unmix.nets import build_net
from unmix.rng import generators_from_seeds
from unmix.samplers import sample
from unmix.store import checkpoint as ckpt
from unmix.training import trainer
from unmix.training.autoencoder import autoencoder_config, finish_autoencoder, stored_objective

AE = dict(kind="autoencoder", channels=8, channel_mult=[1, 2, 2], latent_channels=4, groups=4, image_size=16,
          latent_scale=0.8)


def tiny_model() -> Model:
    torch.manual_seed(0)
    ae = build_net(AE)
    recipe = Recipe.from_name("edm", sigma_data=1.0)
    net = build_net(dict(kind="unet", in_channels=4, channels=8, channel_mult=[1, 2], num_res_blocks=1,
                         attn_levels=[1], noise_scale=recipe.noise_scale))
    for p in net.parameters():  # a fresh U-Net's last layer is zero: give it something to say
        p.data.add_(0.05 * torch.randn_like(p))
    return Model(net, recipe, {"name": "blobs", "shape": [3, 16, 16], "class_names": []}, encoder=AutoencoderEncoder(ae))


def test_sample_draws_latents_and_decodes_them_to_the_image_shape():
    model = tiny_model()
    assert model.shape == (3, 16, 16) and model.latent_shape == (4, 4, 4)
    seen = []
    x = model.sample(3, seed=5, sampler="euler", nfe=4, callback=lambda i, s, xt, x0: seen.append((xt.shape, x0.shape)))
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert seen and all(a == b == (3, 3, 16, 16) for a, b in seen)  # the callback sees images too
    lo, hi = model.recipe.sigma_range()
    z = sample(model.denoiser, (3, 4, 4, 4), "euler", 4, generator=generators_from_seeds([5, 6, 7]),
               sigma_limits=(lo, hi))
    with torch.no_grad():
        expect = model.encoder.decode(z).clamp(-1, 1)
    assert torch.equal(x, expect)
    # sample i depends on its seed only (up to float rounding in a batch of another size)
    assert torch.allclose(model.sample(1, seed=6, sampler="euler", nfe=4), x[1:2], atol=1e-5)


def test_save_and_load_round_trip_samples_bit_identically(tmp_path):
    model = tiny_model()
    model.save(tmp_path / "m")
    assert (tmp_path / "m" / "autoencoder.safetensors").is_file()
    again = load(tmp_path / "m")
    assert isinstance(again.encoder, AutoencoderEncoder) and again.shape == (3, 16, 16) and again.latent_shape == (4, 4, 4)
    assert again.encoder.net.config.latent_scale == 0.8
    assert torch.equal(again.sample(4, seed=1, nfe=6), model.sample(4, seed=1, nfe=6))


def test_inpaint_returns_the_known_pixels_exactly_and_edit_keeps_strength_0():
    model = tiny_model()
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 4:12] = True
    seen = []
    out = model.inpaint(image, mask, n=2, seed=0, method="replace", nfe=4, callback=lambda *a: seen.append(a[2].shape))
    assert seen and set(seen) == {(2, 3, 16, 16)}  # the callback sees images, as the web page's frames need
    full = mask.expand(3, 16, 16)
    assert out.shape == (2, 3, 16, 16)
    assert torch.equal(out[:, ~full], image.expand(2, 3, 16, 16)[:, ~full])
    assert (out[:, full] - image[full]).abs().mean() > 0.05
    assert torch.equal(model.edit(image, 0.0, n=2), image.expand(2, 3, 16, 16))
    assert model.edit(image, 0.6, n=2, nfe=4).shape == (2, 3, 16, 16)


def test_a_damaged_or_mismatched_autoencoder_is_one_clear_error(tmp_path):
    tiny_model().save(tmp_path / "m")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "m", bad)
    config = json.loads((bad / "config.json").read_text())
    config["autoencoder"]["image_size"] = 32
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnmixError, match="does not fit this model") as e:
        load(bad)
    assert "\n" not in str(e.value)
    (bad / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    (bad / "autoencoder.safetensors").unlink()
    with pytest.raises(UnmixError, match="autoencoder.safetensors is missing or unreadable"):
        load(bad)


def blobs(n: int = 48, size: int = 16) -> Dataset:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    centre, radius = 4 + torch.rand(n, 2, generator=g) * (size - 8), 2 + torch.rand(n, generator=g) * 3
    colour = torch.rand(n, 3, generator=g) * 2 - 1
    inside = ((yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2) < radius[:, None, None] ** 2
    x = torch.where(inside[:, None], colour[:, :, None, None], torch.ones(1))
    return Dataset("blobs", ((x + 1) * 127.5).round().to(torch.uint8))


def test_autoencoder_runs_resume_bit_identically_and_get_their_latent_scale(tmp_path):
    settings = dict(steps=4, batch_size=8, checkpoint_every=2, sample_every=100, log_every=2, threads=1,
                    net=dict(channels=8, groups=4))
    data = blobs()
    config, objective = autoencoder_config({**settings, "out": str(tmp_path / "whole")})
    whole = trainer.start(config, dataset=data, objective=objective).train(progress=False)
    config, objective = autoencoder_config({**settings, "steps": 2, "out": str(tmp_path / "part")})
    trainer.start(config, dataset=data, objective=objective).train(progress=False)
    resumed = trainer.resume(tmp_path / "part", dataset=data, objective=stored_objective(tmp_path / "part"), steps=4)
    part = resumed.train(progress=False)
    a, b = ckpt.open_checkpoint(whole.checkpoint), ckpt.open_checkpoint(part.checkpoint)
    for which in ("model", "ema"):
        wa, wb = a.weights(which), b.weights(which)
        assert all(torch.equal(wa[k], wb[k]) for k in wa)
    m = finish_autoencoder(part.checkpoint, data)
    stored = ckpt.open_checkpoint(part.checkpoint).config["net"]["latent_scale"]
    assert stored == m["latent_scale"] != 1.0 and m["n"] == len(data)
    assert ckpt.open_checkpoint(part.checkpoint).training_state()["step"] == 4  # still resumable
    with pytest.raises(UnmixError, match="is an autoencoder"):
        load(part.checkpoint)


def cli(capsys, *args):
    code = run_app([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_trains_both_stages_and_samples_the_latent_run(tmp_path, capsys):
    ae, lat, npy = tmp_path / "ae", tmp_path / "lat", tmp_path / "x.npy"
    code, _, err = cli(capsys, "train-autoencoder", "--data", "digits", "--out", ae, "--factor", "2", "--steps", 6,
                       "--channels", 8, "--batch", 16, "--threads", 1, "--sample-every", 6)
    assert code == 0, err
    assert "reconstruction PSNR" in err and (ae / "samples.png").is_file()
    code, _, err = cli(capsys, "train", "--data", "digits", "--latent", "--autoencoder", ae, "--out", lat, "--steps", 4,
                       "--channels", 8,
                       "--batch-size", 8, "--threads", 1, "--nfe", 4, "--sample-every", 4)
    assert code == 0, err
    config = json.loads((lat / "checkpoint-00000004" / "config.json").read_text())
    assert config["data"]["shape"] == [1, 8, 8] and config["net"]["in_channels"] == 4
    assert config["autoencoder"]["latent_scale"] == json.loads(
        (ae / "checkpoint-00000006" / "config.json").read_text())["net"]["latent_scale"]
    shutil.rmtree(ae)  # the latent run is self-contained
    code, _, err = cli(capsys, "sample", lat, "--n", 3, "--seed", 2, "--nfe", 4, "--save-npy", npy)
    assert code == 0, err
    x = np.load(npy)
    assert x.shape == (3, 1, 8, 8) and x.min() >= -1 and x.max() <= 1
    # distilled like a pixel model: the student learns the teacher's latent steps and keeps its autoencoder
    code, _, err = cli(capsys, "distill", lat, "--nfe", 2, "--from-nfe", 4, "--steps", 2, "--batch-size", 8,
                       "--threads", 1, "--out", tmp_path / "fast")
    assert code == 0, err
    fast, teacher = load(tmp_path / "fast"), load(lat)
    assert fast.sampling == {"sampler": "euler", "nfe": 2}
    assert all(torch.equal(a, b) for a, b in zip(fast.encoder.net.state_dict().values(),
                                                 teacher.encoder.net.state_dict().values()))
    assert fast.sample(2, seed=0).shape == (2, 1, 8, 8)
    code, _, err = cli(capsys, "train", "--data", "emoji", "--latent", "--autoencoder", lat, "--out", tmp_path / "e",
                       "--steps", 1)
    assert code == 2 and err.count("\n") == 1 and "the autoencoder was trained on 1x8x8 images" in err


def test_one_command_trains_the_autoencoder_then_the_diffusion_inside_one_budget(tmp_path, capsys):
    """`unmix train --latent` alone: the autoencoder into OUT/autoencoder (its share of --minutes), then the
    diffusion on its latents; the same command again goes straight to the diffusion, and --resume continues it."""
    out = tmp_path / "one"
    # 0.2 minutes: the autoencoder's 30% plus start-up left too little of 0.05 for 3 diffusion steps in a loaded run
    args = ("train", "--data", "digits", "--latent", "--out", out, "--minutes", 0.2, "--steps", 3, "--channels", 8,
            "--batch-size", 8, "--threads", 1, "--nfe", 2, "--sample-every", 3)
    code, _, err = cli(capsys, *args)
    assert code == 0, err
    assert "stage 1" in err and "reconstruction PSNR" in err and (out / "autoencoder" / "finished.json").is_file()
    stage1 = json.loads((out / "autoencoder" / "finished.json").read_text())
    config = json.loads((out / "checkpoint-00000003" / "config.json").read_text())
    assert config["autoencoder"]["latent_scale"] == stage1["latent_scale"] != 1.0
    assert config["train"]["minutes"] < 0.2  # the diffusion got what the autoencoder left
    code, _, err = cli(capsys, *args[:-2], "--steps", 5, "--resume")
    assert code == 0, err
    assert "stage 1" not in err and (out / "checkpoint-00000005").is_dir()
    code, _, err = cli(capsys, "train", "--autoencoder", out / "autoencoder", "--out", tmp_path / "x")
    assert code == 2 and "--autoencoder is for latent diffusion: add --latent" in err


def test_steps_caps_both_stages_of_the_one_command_latent_run(tmp_path, capsys):
    """`train --latent --steps N` (issue 34): the autoencoder trains at most N steps (never more than its own 700),
    the diffusion N; --minutes still gives the autoencoder half; --help says so."""
    from unmix.training.latent_run import AUTOENCODER_STEPS, stage_budget

    assert stage_budget(None, 3) == {"steps": 3} and stage_budget(None, None) == {"steps": AUTOENCODER_STEPS}
    assert stage_budget(None, 10**6) == {"steps": AUTOENCODER_STEPS} and stage_budget(10.0, None) == {"minutes": 5.0}
    assert stage_budget(10.0, 4) == {"minutes": 5.0, "steps": 4}
    out = tmp_path / "short"
    code, _, err = cli(capsys, "train", "--data", "digits", "--latent", "--out", out, "--steps", 3, "--channels", 8,
                       "--batch-size", 8, "--threads", 1, "--nfe", 2, "--no-preview")
    assert code == 0, err
    assert json.loads((out / "autoencoder" / "finished.json").read_text())["step"] == 3
    assert (out / "checkpoint-00000003").is_dir() and not (out / "autoencoder" / "checkpoint-00000700").exists()
    code, text, _ = cli(capsys, "train", "--help")
    assert code == 0 and "at most --steps and 700 steps" in " ".join(text.split())
