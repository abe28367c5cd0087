"""Diffusers folders read by unmix reproduce diffusers' own pipelines on the same model, noise and steps.

The reference is diffusers itself (DDPMPipeline, DDIMPipeline, its schedulers' alphas_cumprod), run on a
tiny randomly initialised UNet2DModel saved with save_pretrained into a temporary folder (no hub).
"""
import json
import sys

import numpy as np
import pytest
import torch

import unmix
import unmix.cli.commands  # noqa: F401  (registers the commands)
from unmix.adapters.diffusers_folder import is_diffusers_folder, parse_schedule, read_diffusers_folder
from unmix.cli.app import run_app
from unmix.errors import UnmixError
from unmix.guidance import ClassifierFreeGuidance
from unmix.samplers import sample

diffusers = pytest.importorskip("diffusers")
SHAPE = (3, 1, 8, 8)


def tiny_unet(num_class_embeds=None, out_channels=1, seed=0):
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=out_channels, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=4, num_class_embeds=num_class_embeds).eval()


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


def unmix_run(folder, kind, steps, seed, **options):
    """unmix's sampler on the pipeline's timesteps, from the pipeline's start noise (unit variance in VP space)."""
    net, recipe, _ = read_diffusers_folder(folder)
    g = torch.Generator().manual_seed(seed)
    sigmas = recipe.pipeline_sigmas(steps)
    x_init = torch.randn(SHAPE, generator=g) * float((1 + sigmas[0] ** 2).sqrt())  # x_sigma = x_vp * sqrt(1 + s^2)
    with torch.no_grad():
        return sample(recipe.denoiser(net), SHAPE, kind, steps, sigmas=sigmas, x_init=x_init, generator=g, **options)


@torch.no_grad()
def diffusers_loop(unet, scheduler, steps, seed, **step_options):
    """The body of DDPMPipeline / DDIMPipeline without the final clamp to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g)
    scheduler.set_timesteps(steps)
    for t in scheduler.timesteps:
        x = scheduler.step(unet(x, t).sample, t, x, generator=g, **step_options).prev_sample
    return x


@pytest.mark.parametrize("prediction_type,clip,thresholding", [
    ("epsilon", True, False), ("epsilon", False, False), ("v_prediction", False, False), ("sample", True, False),
    ("epsilon", False, True)])
def test_ddpm_reproduces_ddpm_pipeline(tmp_path, unet, prediction_type, clip, thresholding):
    scheduler = diffusers.DDPMScheduler(prediction_type=prediction_type, clip_sample=clip, thresholding=thresholding,
                                        sample_max_value=2.0)
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    ours = unmix_run(tmp_path / "pipe", "ddpm", 40, seed=1)
    ref = pipe(batch_size=SHAPE[0], generator=torch.Generator().manual_seed(1), num_inference_steps=40,
               output_type="pt").images
    assert ref.shape == ours.shape
    assert ((ours / 2 + 0.5).clamp(0, 1) - ref).abs().max() < 1e-4
    raw = diffusers_loop(unet, scheduler, 40, seed=1)  # before the pipeline's clamp, values may be large
    assert ((ours - raw).abs() / (1 + raw.abs())).max() < 1e-4


@pytest.mark.parametrize("prediction_type,clip,spacing,offset", [
    ("epsilon", False, "leading", 0), ("v_prediction", True, "trailing", 0), ("epsilon", True, "leading", 1)])
def test_ddim_eta0_reproduces_ddim_pipeline(tmp_path, unet, prediction_type, clip, spacing, offset):
    scheduler = diffusers.DDIMScheduler(prediction_type=prediction_type, clip_sample=clip, timestep_spacing=spacing,
                                        steps_offset=offset)
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "pipe")
    ours = unmix_run(tmp_path / "pipe", "ddim", 20, seed=2, eta=0.0)
    # unmix steps from one x0_hat, clipped or not, so it matches DDIM that re-derives eps from the clipped x0
    ref = pipe(batch_size=SHAPE[0], generator=torch.Generator().manual_seed(2), num_inference_steps=20, eta=0.0,
               use_clipped_model_output=clip, output_type="pt").images
    assert ((ours / 2 + 0.5).clamp(0, 1) - ref).abs().max() < 1e-4
    raw = diffusers_loop(unet, pipe.scheduler, 20, seed=2, eta=0.0, use_clipped_model_output=clip)
    assert ((ours - raw).abs() / (1 + raw.abs())).max() < 1e-4


@pytest.mark.parametrize("config", [
    {"beta_schedule": "linear", "beta_start": 2e-4, "beta_end": 0.03, "num_train_timesteps": 500},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid"},
    {"trained_betas": torch.linspace(1e-3, 0.05, 200).tolist(), "num_train_timesteps": 200}])
def test_schedules_match_diffusers(tmp_path, unet, config):
    scheduler = diffusers.DDPMScheduler(**config)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "pipe")
    _, recipe, _ = read_diffusers_folder(tmp_path / "pipe")
    assert recipe.discrete.alphas_cumprod.dtype == torch.float64
    torch.testing.assert_close(recipe.discrete.alphas_cumprod.float(), scheduler.alphas_cumprod, rtol=2e-5, atol=1e-7)


def test_v_and_eps_unets_both_sample(tmp_path, unet):
    """An imported v-prediction UNet and an eps UNet give finite samples with every kind of unmix sampler."""
    for pred in ("epsilon", "v_prediction"):
        diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(prediction_type=pred)).save_pretrained(
            tmp_path / pred)
        net, recipe, data = read_diffusers_folder(tmp_path / pred)
        assert recipe.parameterization == {"epsilon": "eps", "v_prediction": "v"}[pred]
        assert data["shape"] == [1, 8, 8] and data["class_names"] == []
        lo, hi = recipe.sigma_range()
        for kind in ("dpmpp_2m", "heun", "euler_ancestral"):
            with torch.no_grad():
                x = sample(recipe.denoiser(net), SHAPE, kind, 6, sigma_min=lo, sigma_max=hi, seed=0)
            assert torch.isfinite(x).all() and x.abs().max() <= 1 + 1e-5  # clip_sample keeps x0_hat in [-1, 1]


def test_sharded_and_fp16_folders_load_the_same_weights(tmp_path, unet):
    unet.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    half = tiny_unet()
    half.to(torch.float16).save_pretrained(tmp_path / "fp16", variant="fp16")
    schedule = {"beta_schedule": "linear", "prediction_type": "epsilon"}
    sharded, _, _ = read_diffusers_folder(tmp_path / "sharded", schedule=schedule)
    fp16, _, _ = read_diffusers_folder(tmp_path / "fp16", schedule=schedule)
    ref = unet.state_dict()
    for k, v in sharded.unet.state_dict().items():
        assert torch.equal(v, ref[k]), k
    for k, v in fp16.unet.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, ref[k].half().float()), k


def test_pickle_only_folder_is_refused(tmp_path, unet):
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert is_diffusers_folder(tmp_path / "bin")
    with pytest.raises(UnmixError, match="never unpickles") as e:
        read_diffusers_folder(tmp_path / "bin", schedule={})
    assert "\n" not in str(e.value)


def test_recognises_folders(tmp_path, unet):
    diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler()).save_pretrained(tmp_path / "pipe")
    unet.save_pretrained(tmp_path / "bare")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"format": "unmix-checkpoint"}))
    assert is_diffusers_folder(tmp_path / "pipe") and is_diffusers_folder(tmp_path / "bare")
    assert not is_diffusers_folder(tmp_path / "other") and not is_diffusers_folder(tmp_path / "missing")
    assert not is_diffusers_folder(tmp_path / "pipe" / "model_index.json")
    with pytest.raises(UnmixError, match="schedule dict"):
        read_diffusers_folder(tmp_path / "bare")
    with pytest.raises(UnmixError, match="unknown schedule settings"):
        read_diffusers_folder(tmp_path / "bare", schedule={"beta_shedule": "linear"})
    _, recipe, _ = read_diffusers_folder(tmp_path / "bare", schedule=parse_schedule(
        "beta_schedule=scaled_linear,beta_start=0.00085,beta_end=0.012,prediction_type=v_prediction,clip_sample=false"))
    assert recipe.parameterization == "v" and recipe.clip_sample is None and recipe.discrete.name == "scaled_linear"
    # a pipeline folder's own scheduler can be overridden the same way
    _, recipe, _ = read_diffusers_folder(tmp_path / "pipe", schedule={"prediction_type": "sample"})
    assert recipe.parameterization == "x0" and recipe.clip_sample == 1.0


def test_class_conditional_unet_takes_labels(tmp_path):
    unet = tiny_unet(num_class_embeds=4)
    unet.save_pretrained(tmp_path / "cond")
    net, recipe, data = read_diffusers_folder(tmp_path / "cond", schedule={})
    assert net.config.num_classes == 4 and data["class_names"] == ["0", "1", "2", "3"]
    x, t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)), torch.tensor([10.0, 500.0, 990.0])
    labels = torch.tensor([0, 3, 1])
    with torch.no_grad():
        assert torch.equal(net(x, t, labels), unet(x, t, class_labels=labels).sample)
        with pytest.raises(UnmixError, match="no 'no label' class"):
            net(x, t, None)  # nothing to sample an unlabelled image from
        with pytest.raises(UnmixError, match="guidance=1"):
            ClassifierFreeGuidance(recipe.denoiser(net), 2.0)(x, torch.ones(3), labels)
        # a UNet whose last class was trained as "no label": unmix's null index is that class
        net, recipe, data = read_diffusers_folder(tmp_path / "cond", schedule={}, null_class=True)
        assert net.config.num_classes == 3 and len(data["class_names"]) == 3
        assert torch.equal(net(x, t, None), unet(x, t, class_labels=torch.full((3,), 3)).sample)
        d = recipe.denoiser(net)
        sigma = torch.full((3,), 2.0)
        guided = ClassifierFreeGuidance(d, 2.0)(x, sigma, labels.clamp(max=2))
        cond, uncond = d(x, sigma, labels.clamp(max=2)), d(x, sigma, None)
        torch.testing.assert_close(guided, uncond + 2.0 * (cond - uncond))


def test_missing_diffusers_is_one_clear_line(tmp_path, unet, monkeypatch):
    unet.save_pretrained(tmp_path / "bare")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers now raises ImportError
    with pytest.raises(UnmixError, match=r'pip install "unmix\[diffusers\]"'):
        read_diffusers_folder(tmp_path / "bare", schedule={})


def test_old_attention_names_are_read(tmp_path, unet):
    """Checkpoints from diffusers < 0.14 name attention weights query/key/value/proj_attn."""
    from safetensors.torch import load_file, save_file

    unet.save_pretrained(tmp_path / "old")
    f = tmp_path / "old" / "diffusion_pytorch_model.safetensors"
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    state = load_file(f)
    old = {}
    for k, v in state.items():
        for new, was in renames.items():
            k = k.replace(new, was)
        old[k] = v
    assert any(".query." in k for k in old)
    save_file(old, f)
    net, _, _ = read_diffusers_folder(tmp_path / "old", schedule={})
    for k, v in net.unet.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_learned_variance_unet_uses_the_mean_half(tmp_path):
    unet = tiny_unet(out_channels=2)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(variance_type="learned_range")
                           ).save_pretrained(tmp_path / "pipe")
    net, _, _ = read_diffusers_folder(tmp_path / "pipe")
    x, t = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)), torch.tensor([5.0, 50.0, 500.0])
    with torch.no_grad():
        assert torch.equal(net(x, t), unet(x, t).sample[:, :1])


# -- through unmix.load and the CLI ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe(tmp_path_factory, unet):
    folder = tmp_path_factory.mktemp("diffusers") / "pipe"
    diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(clip_sample=False)).save_pretrained(folder)
    return folder


def test_unmix_load_reproduces_ddim_pipeline(pipe, unet):
    """Model.sample on the pipeline's own timesteps and start noise gives DDIMPipeline's images (eta 0)."""
    model = unmix.load(pipe)
    assert model.shape == (1, 8, 8) and model.num_classes == 0 and model.checkpoint == pipe
    sigmas = model.recipe.pipeline_sigmas(10)
    x_vp = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    x = model.sample(3, sampler="ddim", sigmas=sigmas, x_init=x_vp * float((1 + sigmas[0] ** 2).sqrt()))
    scheduler = diffusers.DDIMScheduler(clip_sample=False)
    scheduler.set_timesteps(10)
    ref = x_vp.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            ref = scheduler.step(unet(ref, t).sample, t, ref, eta=0.0).prev_sample
    torch.testing.assert_close(x, ref.clamp(-1, 1), atol=1e-4, rtol=0)


def test_bare_unet_takes_its_schedule_from_beside_it_or_from_schedule(tmp_path, pipe, unet):
    unet.save_pretrained(tmp_path / "bare")
    with pytest.raises(UnmixError, match="scheduler_config.json beside config.json"):
        unmix.load(tmp_path / "bare")
    want = unmix.load(pipe).sample(2, seed=1, sampler="ddim", nfe=5)
    assert torch.equal(unmix.load(tmp_path / "bare", schedule={}).sample(2, seed=1, sampler="ddim", nfe=5), want)
    diffusers.DDIMScheduler(clip_sample=False).save_pretrained(tmp_path / "bare")  # scheduler_config.json beside it
    assert torch.equal(unmix.load(tmp_path / "bare").sample(2, seed=1, sampler="ddim", nfe=5), want)
    v = unmix.load(tmp_path / "bare", schedule={"prediction_type": "v_prediction"})
    assert v.recipe.parameterization == "v" and not torch.equal(v.sample(2, seed=1, sampler="ddim", nfe=5), want)


def test_cli_samples_inpaints_and_edits_a_diffusers_folder(pipe, tmp_path, capsys):
    from PIL import Image

    model = unmix.load(pipe)
    assert run_app(["sample", str(pipe), "--sampler", "ddim", "--nfe", "6", "--n", "3", "--seed", "2",
                    "--save-npy", str(tmp_path / "x.npy"), "--out", str(tmp_path / "samples")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), model.sample(3, seed=2, sampler="ddim", nfe=6).numpy(),
                               atol=1e-6)
    image = np.tile(np.linspace(0, 255, 8, dtype=np.uint8), (8, 1))
    Image.fromarray(image, "L").save(tmp_path / "im.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[:, 4:] = 255  # fill in the right half
    Image.fromarray(mask, "L").save(tmp_path / "mask.png")
    assert run_app(["inpaint", str(pipe), str(tmp_path / "im.png"), "--mask", str(tmp_path / "mask.png"), "--n", "2",
                    "--nfe", "6", "--out", str(tmp_path / "inp"), "--save-npy", str(tmp_path / "inp.npy")]) == 0
    filled = np.load(tmp_path / "inp.npy")
    known = image[None, None, :, :4] / 127.5 - 1
    assert filled.shape == (2, 1, 8, 8) and np.abs(filled[..., :4] - known).max() < 0.05  # kept half kept
    assert run_app(["edit", str(pipe), str(tmp_path / "im.png"), "--strength", "0.3", "--n", "2", "--nfe", "6",
                    "--out", str(tmp_path / "ed"), "--save-npy", str(tmp_path / "ed.npy")]) == 0
    assert np.load(tmp_path / "ed.npy").shape == (2, 1, 8, 8)
    assert run_app(["info", str(pipe)]) == 0
    out = capsys.readouterr().out
    assert "diffusers DDIMPipeline folder" in out and "eps prediction, 1000 steps of linear betas" in out
    assert "health       weights readable, network runs" in out


def test_cli_refuses_a_pickle_only_folder_in_one_line(tmp_path, unet, capsys):
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(
        tmp_path / "pipe", safe_serialization=False)
    assert not list(tmp_path.glob("**/*.safetensors"))
    for argv in (["sample", str(tmp_path / "bin"), "--n", "1", "--nfe", "2"], ["info", str(tmp_path / "bin")],
                 ["sample", str(tmp_path / "pipe"), "--n", "1", "--nfe", "2"]):
        capsys.readouterr()
        assert run_app(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "never unpickles" in err and "\n" not in err


def test_cli_names_the_missing_schedule_of_a_bare_unet(tmp_path, unet, capsys):
    unet.save_pretrained(tmp_path / "bare")
    assert run_app(["sample", str(tmp_path / "bare"), "--n", "1", "--nfe", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scheduler_config.json beside config.json" in err and "--schedule" not in err and "\n" not in err


def test_eval_and_nll_measure_a_diffusers_folder_against_the_named_data(pipe, capsys):
    """A diffusers folder does not know its training data: eval and nll need --data, and refuse data of
    another shape; with it, the likelihood of digits on the VLB is finite and the uniform baseline is reported."""
    with pytest.raises(UnmixError, match="diffusers folder.*data="):
        unmix.nll(pipe, "vlb", n=4)
    with pytest.raises(UnmixError, match=r"emoji gives items of shape \[3, 32, 32\], the model makes \[1, 8, 8\]"):
        unmix.evaluate(pipe, n=200, data="emoji")
    out = unmix.nll(pipe, "vlb", n=4, data="digits")
    assert out["data"] == "digits" and out["levels"] == 17 and np.isfinite(out["bits_per_dim"])
    assert out["bits_per_dim"] > 0
    assert run_app(["eval", str(pipe)]) == 2
    assert "--data" in capsys.readouterr().err
