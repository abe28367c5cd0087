"""Inpaint: fill in the part of an image painted with the brush (white = fill in), by any of unmix.inpaint's
methods, streaming the sampler's frames; the known pixels come back exactly."""
from __future__ import annotations

import torch
from starlette.requests import Request
from starlette.routing import Route

from unmix.errors import UnmixError
from unmix.inpaint import METHODS, check_mask
from unmix.web.context import cli_line, streamed, web_of
from unmix.web.frames import grid_url, image_url
from unmix.web.tabs import Tab
from unmix.web.uploads import read_mask_url


async def run(request: Request):
    web = web_of(request)
    f = await web.fields(request)
    entry = web.entry(f)
    y = web.image(f, entry)
    if f.get("mask") is None:
        raise UnmixError("paint the part to fill in first (mask is missing)")
    mask = check_mask(read_mask_url(f.get("mask"), entry.shape), y.shape)
    s = web.sampling(f, entry, nfe=20, count=8)
    method = f.choice("method", "repaint", METHODS)
    weight = f.float("weight", 1.0, 0.0, 100.0)
    jump, repeats = f.int("jump", 5, 1, 100), f.int("repeats", 4, 1, 20)
    calls = s["nfe"] * (repeats if method.endswith("repaint") else 1) * (2 if method.startswith("guided") else 1)
    if calls > web.limits.max_calls:
        raise UnmixError(f"{method} with nfe={s['nfe']} and repeats={repeats} costs about {calls} network passes; "
                         f"this server's limit is {web.limits.max_calls}")
    steer = web.steering(f, entry)
    cli = cli_line("inpaint", entry, "image.png", mask="mask.png", n=s["count"], method=method, sampler=s["sampler"],
                   nfe=s["nfe"], seed=s["seed"], **web.cli_steering(steer),
                   **({"jump": jump, "repeats": repeats} if method.endswith("repaint") else {}),
                   **({"weight": weight} if method.startswith("guided") else {}))

    def work(progress) -> dict:
        model = web.models.model(entry.name)
        x = model.inpaint(y, mask, s["count"], seed=s["seed"], **steer, method=method,
                          sampler=s["sampler"], nfe=s["nfe"], jump=jump, repeats=repeats, weight=weight,
                          callback=streamed(progress))
        shown = torch.where(mask, torch.zeros_like(y), y)
        return {"image": grid_url(x), "input": grid_url(torch.stack([y, shown])), "cli": cli,
                "image_png": image_url(y), "mask_png": image_url(mask.float().expand(1, *y.shape[1:]) * 2 - 1)}

    return web.stream(work)


TAB = Tab("inpaint", "Inpaint", 30, [Route("/run", run, methods=["POST"])])
