"""Ink in water: the forward process on one image (a slider over one Brownian noise path, x_sigma shown as the
network sees it, x / sqrt(1 + sigma^2)), and the same noisy state run back by a model, streamed frame by frame:
the noisy state beside the model's current guess x0_hat."""
from __future__ import annotations

import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from unmix.errors import UnmixError
from unmix.forward import trajectory
from unmix.samplers import sample
from unmix.show import forward_frames, forward_sigmas
from unmix.web.context import streamed, web_of
from unmix.web.frames import frame_url, grid_url
from unmix.web.tabs import Tab


def _path(web, f):
    """(entry, image [1, C, H, W], noise levels, seed) of the request's forward path."""
    entry = web.entry(f)
    x0 = web.image(f, entry)[None]
    frames = f.int("frames", 40, 2, web.limits.max_frames)
    sigma_max = web.models.model(entry.name).recipe.sigma_range()[1]
    return entry, x0, forward_sigmas(frames, sigma_max), f.int("seed", 0, 0, 2**31 - 1)


async def forward(request: Request):
    """Every frame of the path at once: the slider and "play" then move through them without asking again."""
    web = web_of(request)
    f = await web.fields(request)

    def frames():
        _, x0, sigmas, seed = _path(web, f)
        return {"sigmas": sigmas, "frames": [frame_url(v) for v in forward_frames(x0, sigmas, seed)]}

    return JSONResponse(await run_in_threadpool(frames))


async def reverse(request: Request):
    """Run the path's frame `index` back to sigma = 0 with the chosen sampler: the same noise, denoised."""
    web = web_of(request)
    f = await web.fields(request)
    entry, x0, sigmas, seed = await run_in_threadpool(_path, web, f)
    index = f.int("index", len(sigmas) // 2, 1, len(sigmas) - 1)
    s = web.sampling(f)

    def work(progress) -> dict:
        model = web.models.model(entry.name)
        sigma = sigmas[index]
        if sigma <= 0:
            raise UnmixError("move the slider above sigma = 0: there is no noise to run back")
        # in the space the model denoises (a latent model's latents: the same path's noise, on the encoded image)
        z0 = model.encoder.encode(x0.to(model.device)).cpu()
        x_k = trajectory(z0, sigmas[: index + 1], torch.Generator().manual_seed(seed))[index].to(model.device)
        lo = model.recipe.sigma_range()[0]
        z = sample(model.denoiser, x_k.shape, s["sampler"], s["nfe"], generator=torch.Generator().manual_seed(seed + 1),
                   x_init=x_k, sigma_max=sigma, sigma_min=min(lo, sigma), device=model.device,
                   callback=model.encoder.decoding(streamed(progress)))
        return {"image": grid_url(model.encoder.decode(z).clamp(-1, 1)), "sigma": sigma}

    return web.stream(work)


TAB = Tab("ink", "Ink in water", 10, [Route("/forward", forward, methods=["POST"]),
                                       Route("/reverse", reverse, methods=["POST"])])
