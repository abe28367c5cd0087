"""Inpainting with Stable Diffusion's inpainting UNet (sd-v1-5-inpainting, SD 2 inpainting: 9 input channels).

Such a UNet sees, after the 4 latent channels, the mask at latent resolution and the latents of the masked picture,
exactly as StableDiffusionInpaintPipeline builds them (tests/test_sd_edit_inpaint.py):

    masked picture   the picture with its masked pixels set to 0 (mid grey), encoded by the VAE
    latent mask      the pixel mask taken to latent resolution by nearest-neighbour sampling

Those channels are conditioning data, bound to the network (SDUNet.with_inputs), so prompts, negative prompts,
classifier-free guidance and every unmix sampler and grid work as for any model. The default method, "unet",
samples with them and nothing else (the pipeline's way); unmix's own methods (repaint, replace, guided, ...) can run
on top of them. Either way the known pixels are pasted back, so they come out exactly as given (the pipeline
returns its decoded picture whole).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unmix import encoders
from unmix.control import image_batch
from unmix.inpaint import check_mask
from unmix.samplers import DEFAULT_SAMPLER, sample

UNET = "unet"  # the method that lets the inpainting UNet fill in alone


def takes_mask(net) -> bool:
    """True for a network whose input holds a mask and a masked picture (SD's inpainting UNet)."""
    return int(getattr(net, "extra_channels", 0) or 0) > 0


def inpainting_inputs(encoder, y: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """[N, 1 + latent channels, h, w]: the latent mask then the masked picture's latents, of pictures y [N, C, H, W]
    with `full` True where they are filled in."""
    z = encoder.encode(torch.where(full, torch.zeros_like(y), y))
    small = F.interpolate(full[:, :1].to(z.dtype), size=tuple(z.shape[-2:]))  # nearest, as the pipeline
    return torch.cat([small, z], 1)


@torch.no_grad()
def inpaint(model, image: torch.Tensor, mask, n: int | None, seed: int = 0, labels=None, guidance: float | None = None,
            prompts=None, negative_prompt: str | None = None, method: str = UNET, sampler: str = DEFAULT_SAMPLER,
            nfe: int = 20, return_nfe: bool = False, **options):
    """n completions of `image` where `mask` is True by a loaded Model whose net takes a mask (`takes_mask`);
    completion i uses seed + i. Options as for Model.inpaint; method "unet" also takes sample()'s (sigmas, x_init,
    callback, ...), the others go to unmix.encoders.inpaint."""
    y = image_batch(image, n)
    mask = check_mask(mask, y.shape[1:]).to(y.device)
    full = torch.broadcast_to(mask, y.shape)
    net = model.net.with_inputs(inpainting_inputs(model.encoder, y, full))
    k = len(y)
    denoiser, cond = model._steered(k, labels, guidance, prompts, negative_prompt, base=model.recipe.denoiser(net))
    lo, hi = model.recipe.sigma_range()
    run = {"sigma_min": lo, "sigma_max": hi, **options, "generator": model._generators(k, seed),
           "cond": cond.to(y.device), "sampler": sampler, "nfe": nfe}
    if method != UNET:
        return encoders.inpaint(model.encoder, denoiser, y, mask, method=method, return_nfe=return_nfe, **run)
    if run.get("callback") is not None:
        run["callback"] = model.encoder.decoding(run["callback"])
    z, used = sample(denoiser, (k, *model.latent_shape), device=y.device, return_nfe=True, **run)
    out = torch.where(full, model.encoder.decode(z).to(y.dtype).clamp(-1, 1), y)
    return (out, used) if return_nfe else out
