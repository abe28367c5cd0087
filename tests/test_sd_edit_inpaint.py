"""Image-to-image and inpainting on Stable Diffusion models, through unmix's own paths (Model.edit / Model.inpaint,
unmix.encoders), against diffusers' StableDiffusionImg2ImgPipeline / StableDiffusionInpaintPipeline on tiny random
models built in the test (tests/test_stable_diffusion.py), fp32 on the CPU.

diffusers encodes an image to a *sample* of the VAE's posterior (mean + std x noise, from the pipeline's generator);
unmix encodes to its mean, as SD's own img2img scripts do for a deterministic edit. The reference pipelines here run
with the posterior's sample replaced by its mean (monkeypatched), which is the one thing changed in them.
"""
import pytest
import torch
import torch.nn.functional as F
from test_stable_diffusion import GUIDANCE, PROMPT, SD, STEPS, tiny_parts

import unmix
from unmix.errors import UnmixError
from unmix.guidance import steer
from unmix.inpaint import inpaint as fill_in
from unmix.sampler_names import named_sampler

diffusers = pytest.importorskip("diffusers")
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution  # noqa: E402

SCHEDULERS = {"DDIMScheduler": dict(set_alpha_to_one=True), "EulerDiscreteScheduler": {},
              "DPMSolverMultistepScheduler": {}}


@pytest.fixture(autouse=True)
def posterior_mean(monkeypatch):
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)


def _pipeline(cls, parts, folder, prediction="epsilon"):
    pipe = cls(**parts, scheduler=diffusers.DDIMScheduler(**SD, prediction_type=prediction), safety_checker=None,
               feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd-edit")
    parts = tiny_parts(tmp)
    pipes = {p: _pipeline(diffusers.StableDiffusionImg2ImgPipeline, parts, tmp / p, p) for p in ("epsilon", "v_prediction")}
    torch.manual_seed(1)
    nine = dict(parts, unet=diffusers.UNet2DConditionModel(**{**dict(parts["unet"].config), "in_channels": 9}).eval())
    pipes["inpaint"] = _pipeline(diffusers.StableDiffusionInpaintPipeline, nine, tmp / "inpaint")
    pipes["inpaint4"] = _pipeline(diffusers.StableDiffusionInpaintPipeline, parts, tmp / "inpaint4")
    return pipes, tmp


def _swap(pipe, folder, scheduler):
    cls = getattr(diffusers, scheduler)
    pipe.scheduler = cls.from_config(cls.load_config(folder / "scheduler"), **SCHEDULERS[scheduler])


def _picture(seed=5):
    """A smooth 16 x 16 RGB picture in [-1, 1] (what the tiny VAE reads)."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(small, size=16, mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@torch.no_grad()
def test_sd_img2img_matches_diffusers(tiny, prediction, scheduler):
    """Model.edit with the scheduler's sampler on its whole grid: strength 0.6 walks the last int(0.6 x 5) = 3 steps
    from the encoded picture noised to that step's level, as the Img2Img pipeline does, on the same noise."""
    pipes, tmp = tiny
    pipe, model, x = pipes[prediction], unmix.load(tmp / prediction), _picture()
    _swap(pipe, tmp / prediction, scheduler)
    ref = pipe(PROMPT, image=(x[None] / 2 + 0.5), strength=0.6, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
               negative_prompt="a mat", generator=torch.Generator().manual_seed(7), output_type="pt").images
    sampler, grid = named_sampler(scheduler, model.recipe, STEPS)
    out, used = model.edit(x, 0.6, n=1, seed=7, sampler=sampler, nfe=STEPS, prompts=PROMPT, negative_prompt="a mat",
                           guidance=GUIDANCE, return_nfe=True, **grid)
    out = (out / 2 + 0.5).clamp(0, 1)
    print(f"img2img {scheduler} {prediction}: max abs diff {float((out - ref).abs().max()):.2e}")
    assert used == 3
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def _mask():
    """A 16 x 16 mask, True (fill in) on a 6 x 8 block that is not aligned to the VAE's 2 x 2 latent pixels."""
    m = torch.zeros(1, 16, 16, dtype=torch.bool)
    m[:, 3:9, 5:13] = True
    return m


def _diffusers_inpaint(pipe, x, mask, z, **kw):
    return pipe(PROMPT, image=x[None] / 2 + 0.5, mask_image=mask[None].float(), num_inference_steps=STEPS,
                guidance_scale=GUIDANCE, negative_prompt="a mat", latents=z.clone(), output_type="pt", **kw).images


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
@torch.no_grad()
def test_sd_inpainting_unet_matches_diffusers(tiny, scheduler):
    """The 9-channel inpainting UNet: Model.inpaint (its default method "unet") = StableDiffusionInpaintPipeline on
    the masked pixels, from the same start noise; the known pixels are the picture's, exactly (the pipeline returns
    its decoded picture whole, so there they differ by the VAE's round trip)."""
    pipes, tmp = tiny
    pipe, model, x, mask = pipes["inpaint"], unmix.load(tmp / "inpaint"), _picture(), _mask()
    assert model.net.extra_channels == 5
    _swap(pipe, tmp / "inpaint", scheduler)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    ref = _diffusers_inpaint(pipe, x, mask, z)
    sampler, grid = named_sampler(scheduler, model.recipe, STEPS)
    x_init = z * float((1 + grid["sigmas"][0] ** 2).sqrt())  # the pipeline's VP start noise, in the sigma convention
    out = model.inpaint(x, mask, n=1, sampler=sampler, nfe=STEPS, prompts=PROMPT, negative_prompt="a mat",
                        guidance=GUIDANCE, x_init=x_init, **grid)
    out01, full = (out / 2 + 0.5).clamp(0, 1), mask.expand(1, 3, 16, 16)
    diff = float((out01 - ref)[full].abs().max())
    print(f"inpainting UNet {scheduler}: max abs diff on the masked pixels {diff:.2e}")
    assert diff < 1e-4
    assert torch.equal(out[~full], x[None].expand(1, 3, 16, 16)[~full])
    with pytest.raises(UnmixError, match="inpainting UNet"):
        model.sample(1, nfe=2, prompts=PROMPT)


@torch.no_grad()
def test_sd_inpainting_unet_takes_unmix_methods_and_batches(tiny):
    """unmix's own methods run on top of the inpainting UNet's inputs; completion i of a batch is its seed's alone."""
    pipes, tmp = tiny
    model, x, mask = unmix.load(tmp / "inpaint"), _picture(), _mask()
    both = model.inpaint(x, mask, n=2, seed=4, nfe=4, prompts=PROMPT, guidance=3.0)
    one = model.inpaint(x, mask, n=1, seed=5, nfe=4, prompts=PROMPT, guidance=3.0)
    torch.testing.assert_close(both[1:], one, atol=1e-5, rtol=0)
    out, used = model.inpaint(x, mask, n=1, method="repaint", nfe=4, jump=2, repeats=2, prompts=PROMPT,
                              return_nfe=True)
    assert used > 4 and torch.equal(out[0][~mask.expand(3, 16, 16)], x[~mask.expand(3, 16, 16)])



@torch.no_grad()
def test_sd_inpainting_any_unet_keeps_the_pipelines_known_latents(tiny):
    """Any (4-channel) UNet: exact parity with StableDiffusionInpaintPipeline is impossible by design, so this compares
    the rule the two share instead. The pipeline starts every latent from pure VP noise and, after each step, blends in
    the picture's latents noised to the next level, y + sigma_k z; unmix's "replace" (and RePaint's segments) start the
    known latents at y + sigma_0 z and the unknown at sigma_0 z (the sigma convention), and keep the known ones on
    y + sigma_k z through the denoiser's x0_hat. So from the first step on the known latents agree with the pipeline's,
    on the same noise z, picture latents and latent mask (nearest-sampled, fed to unmix.inpaint.inpaint directly),
    while the unknown latents, seen once from a different start, do not. Through Model.inpaint unmix also encodes the
    picture with its masked pixels filled by the known ones' mean and takes a latent as unknown when any of its pixels
    is, and pastes the known pixels back exactly (the pipeline returns its decoded picture whole)."""
    pipes, tmp = tiny
    pipe, model, x, mask = pipes["inpaint4"], unmix.load(tmp / "inpaint4"), _picture(), _mask()
    _swap(pipe, tmp / "inpaint4", "DDIMScheduler")
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    theirs = []
    _diffusers_inpaint(pipe, x, mask, z, callback_on_step_end=lambda p, i, t, kw: theirs.append(kw["latents"]) or kw)
    sampler, grid = named_sampler("DDIMScheduler", model.recipe, STEPS)
    sigmas = grid["sigmas"]
    uncond = model.text_encoder().encode(["a mat"])
    denoiser = steer(model.denoiser, model.encode_prompts(PROMPT, 1), GUIDANCE, uncond=uncond)
    zmask = F.interpolate(mask[None].float(), size=8)[0].bool().expand(4, 8, 8)
    ours = []
    latents = fill_in(denoiser, model.encoder.encode(x[None]), zmask, method="replace", sampler=sampler, sigmas=sigmas,
                      generator=torch.Generator().manual_seed(3), cond=model.encode_prompts(PROMPT, 1),
                      callback=lambda step, sigma, x_in, d: ours.append(x_in))
    for k in range(1, STEPS):  # unmix's input at level k = the pipeline's latents after step k - 1 (VP: / sqrt(1 + s^2))
        vp = ours[k] / float((1 + sigmas[k] ** 2).sqrt())
        torch.testing.assert_close(vp[:, ~zmask], theirs[k - 1][:, ~zmask], atol=1e-5, rtol=0)
    torch.testing.assert_close(latents[:, ~zmask], theirs[-1][:, ~zmask], atol=1e-5, rtol=0)
    assert float((latents - theirs[-1])[:, zmask].abs().max()) > 1e-3  # the different start shows where it is unknown
    out = model.inpaint(x, mask, n=1, method="replace", sampler=sampler, nfe=STEPS, prompts=PROMPT, **grid)
    assert torch.equal(out[0][~mask.expand(3, 16, 16)], x[~mask.expand(3, 16, 16)])
