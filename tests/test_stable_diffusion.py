"""Stable Diffusion models read by unmix reproduce diffusers' own pipelines on the same model, noise, prompt and steps.

The reference is diffusers' StableDiffusionPipeline with the matching scheduler, run on a tiny random SD model
(UNet2DConditionModel, AutoencoderKL, CLIPTextModel and a CLIP tokenizer on a hand-made vocabulary) saved with
save_pretrained into a temporary folder: nothing is downloaded.
"""
import json

import numpy as np
import pytest
import torch

import unmix
import unmix.cli.commands  # noqa: F401  (registers the commands)
from unmix.adapters.diffusers_folder import DiffusersRecipe, schedule_config
from unmix.cli.app import run_app
from unmix.errors import UnmixError
from unmix.sampler_names import named_sampler

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
PROMPT, STEPS, GUIDANCE = "a cat on a mat", 5, 7.5
SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
          timestep_spacing="leading",
          set_alpha_to_one=False)  # Stable Diffusion 1.x / 2.x's scheduler settings


def byte_chars() -> list[str]:
    """CLIP's byte-level alphabet: one printable character per byte (as GPT-2's BPE)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b if b in keep else next(extra)) for b in range(256)]


def tiny_tokenizer(folder):
    """A CLIPTokenizer on a hand-made vocabulary: every byte, alone and word-final, plus a few merges."""
    chars = byte_chars()
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    merges = ["a t</w>", "c at</w>", "m at</w>", "o n</w>"]
    for m in merges:
        vocab["".join(m.split())] = len(vocab)
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)


def tiny_parts(tmp, seed=0):
    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(tmp / "vocab")
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=16, bos_token_id=end - 1, eos_token_id=end, pad_token_id=end)).eval()
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, norm_num_groups=4, attention_head_dim=2).eval()
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, norm_num_groups=4, sample_size=16).eval()
    return dict(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer)


def save_pipeline(parts, folder, **scheduler):
    pipe = diffusers.StableDiffusionPipeline(**parts, scheduler=diffusers.DDIMScheduler(**SD, **scheduler),
                                             safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return pipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd")
    parts = tiny_parts(tmp)
    return {p: save_pipeline(parts, tmp / p, prediction_type=p) for p in ("epsilon", "v_prediction")}, tmp


# diffusers' settings for the comparison (DDIM: see test_sd_ddim_final_step)
SCHEDULERS = {"DDIMScheduler": dict(set_alpha_to_one=True), "EulerDiscreteScheduler": {},
              "DPMSolverMultistepScheduler": {}}


@torch.no_grad()
def diffusers_images(pipe, folder, scheduler, z, negative_prompt=None, **overrides):
    """The pipeline's images with `scheduler` made from the folder's scheduler config (as users swap schedulers)."""
    cls = getattr(diffusers, scheduler)
    pipe.scheduler = cls.from_config(cls.load_config(folder / "scheduler"), **overrides)
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPT, negative_prompt=negative_prompt, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
                num_images_per_prompt=len(z), latents=z.clone(), output_type="pt").images


def unmix_images(model, scheduler, z, negative_prompt=None):
    """unmix's sampler and grid for the diffusers scheduler's name (unmix.sampler_names), from the same noise."""
    sampler, grid = named_sampler(scheduler, model.recipe, STEPS)
    x_init = z * float((1 + grid["sigmas"][0] ** 2).sqrt())  # the pipeline's VP start noise, in the sigma convention
    x = model.sample(len(z), sampler=sampler, nfe=STEPS, **grid, x_init=x_init, prompts=PROMPT,
                     negative_prompt=negative_prompt, guidance=GUIDANCE)
    return (x / 2 + 0.5).clamp(0, 1)


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_sd_sampling_matches_diffusers_pipeline(tiny, prediction, scheduler):
    """unmix's DDIM / Euler / DPM-Solver++(2M) on the scheduler's timesteps = StableDiffusionPipeline's images."""
    pipes, tmp = tiny
    model = unmix.load(tmp / prediction)
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = diffusers_images(pipes[prediction], tmp / prediction, scheduler, z, **SCHEDULERS[scheduler])
    out = unmix_images(model, scheduler, z)
    print(f"{scheduler} {prediction}: max abs diff {float((out - ref).abs().max()):.2e}")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def test_sd_negative_prompt_matches_diffusers(tiny):
    pipes, tmp = tiny
    model = unmix.load(tmp / "epsilon")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    ref = diffusers_images(pipes["epsilon"], tmp / "epsilon", "EulerDiscreteScheduler", z, negative_prompt="a mat")
    out = unmix_images(model, "EulerDiscreteScheduler", z, negative_prompt="a mat")
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    assert float((out - unmix_images(model, "EulerDiscreteScheduler", z)).abs().max()) > 1e-3  # the negative prompt counts


def test_sd_model_is_a_text_latent_model(tiny):
    pipes, tmp = tiny
    model = unmix.load(tmp / "epsilon")
    assert model.is_text and model.shape == (3, 16, 16) and model.latent_shape == (4, 8, 8)
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    vae = pipes["epsilon"].vae
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.encode(x), vae.encode(x).latent_dist.mean * vae.config.scaling_factor)
    images = model.sample(2, nfe=4, prompts=PROMPT)  # any unmix sampler and grid on the same model
    assert images.shape == (2, 3, 16, 16) and bool(images.isfinite().all())


def test_sd_ddim_final_step(tiny):
    """SD's own DDIM config (set_alpha_to_one=False) stops at the table's first level and decodes that noisy latent;
    unmix's last step goes to sigma = 0 (the posterior mean), as DDIM with set_alpha_to_one=True does."""
    pipes, tmp = tiny
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    sd_own = diffusers_images(pipes["epsilon"], tmp / "epsilon", "DDIMScheduler", z)
    to_zero = diffusers_images(pipes["epsilon"], tmp / "epsilon", "DDIMScheduler", z, set_alpha_to_one=True)
    assert float((sd_own - to_zero).abs().max()) > 1e-4


def test_sd_fp16_and_sharded_folders_load_the_same_weights(tiny, tmp_path):
    pipes, tmp = tiny
    parts = {k: getattr(pipes["epsilon"], k) for k in ("unet", "vae", "text_encoder", "tokenizer")}
    pipe = diffusers.StableDiffusionPipeline(**parts, scheduler=pipes["epsilon"].scheduler, safety_checker=None,
                                             feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert list((tmp_path / "sharded" / "unet").glob("*.index.json"))
    base, sharded = unmix.load(tmp / "epsilon"), unmix.load(tmp_path / "sharded")
    for a, b in ((base.net, sharded.net), (base.encoder.vae, sharded.encoder.vae),
                 (base.text_encoder().model, sharded.text_encoder().model)):
        assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    pipe.to(torch.float16).save_pretrained(tmp_path / "fp16", variant="fp16")
    half = unmix.load(tmp_path / "fp16")
    assert all(torch.equal(x.half().float(), y) for x, y in zip(base.net.state_dict().values(),
                                                                half.net.state_dict().values()))


def test_sd_pickle_only_and_incomplete_folders_are_one_line(tiny, tmp_path):
    pipes, tmp = tiny
    pipes["epsilon"].save_pretrained(tmp_path / "pickles", safe_serialization=False)
    with pytest.raises(UnmixError, match="never unpickles") as e:
        unmix.load(tmp_path / "pickles")
    assert "\n" not in str(e.value)
    (tmp_path / "ckpt.ckpt").write_bytes(b"not read")
    with pytest.raises(UnmixError, match="never unpickles"):
        unmix.load(tmp_path / "ckpt.ckpt")
    partial = tmp_path / "partial"
    pipes["epsilon"].save_pretrained(partial)
    for f in (partial / "vae").iterdir():
        f.unlink()
    (partial / "vae").rmdir()
    with pytest.raises(UnmixError, match="lacks vae/"):
        unmix.load(partial)


@pytest.mark.parametrize("spacing", ["leading", "linspace", "trailing"])
@pytest.mark.parametrize("steps", [5, 7])
def test_multistep_grid_is_dpm_solvers_timesteps(spacing, steps):
    config = {**SD, "timestep_spacing": spacing}
    config.pop("set_alpha_to_one")
    recipe = DiffusersRecipe.from_scheduler_config(schedule_config(config, None))
    scheduler = diffusers.DPMSolverMultistepScheduler(**{k: v for k, v in config.items() if k != "clip_sample"})
    scheduler.set_timesteps(steps)
    torch.testing.assert_close(recipe.pipeline_sigmas(steps, multistep=True).float(), scheduler.sigmas.float())


def test_cli_samples_an_sd_folder_with_a_users_sampler_name(tiny, tmp_path):
    _, tmp = tiny
    model = unmix.load(tmp / "epsilon")
    assert run_app(["sample", str(tmp / "epsilon"), "--prompt", PROMPT, "--negative-prompt", "a mat", "--guidance",
                    "5", "--sampler", "dpm++ 2m karras", "--nfe", "4", "--n", "2", "--save-npy",
                    str(tmp_path / "x.npy"), "--out", str(tmp_path / "out")]) == 0
    sampler, grid = named_sampler("DPM++ 2M Karras", model.recipe, 4)
    lo, hi = model.recipe.sigma_range()
    assert sampler == "dpmpp_2m" and float(grid["sigmas"][0]) == pytest.approx(hi)
    assert float(grid["sigmas"][-2]) == pytest.approx(lo)
    want = model.sample(2, sampler=sampler, nfe=4, prompts=PROMPT, negative_prompt="a mat", guidance=5, **grid)
    np.testing.assert_allclose(np.load(tmp_path / "x.npy"), want.numpy(), atol=1e-6)
