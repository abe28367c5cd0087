"""Diffusers folders read by unmix reproduce diffusers' own pipelines on the same model, noise and steps.

The reference is diffusers itself (DDPMPipeline, DDIMPipeline, its schedulers' alphas_cumprod), run on a
tiny randomly initialised UNet2DModel saved with save_pretrained into a temporary folder (no hub).
"""
import json
import sys

import pytest
import torch

from unmix.diffusers_folder import is_diffusers_folder, parse_schedule, read_diffusers_folder
from unmix.errors import UnmixError
from unmix.guidance import ClassifierFreeGuidance
from unmix.samplers import sample

diffusers = pytest.importorskip("diffusers")
torch.set_num_threads(1)
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
    with pytest.raises(UnmixError, match="schedule="):
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
