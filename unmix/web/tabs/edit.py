"""Edit (SDEdit, Meng et al. 2022): noise an image to the level `strength` sets, then let the model denoise it;
low strength keeps the layout, high strength keeps little but the rough shape."""
from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from unmix.web.context import cli_line, streamed, web_of
from unmix.web.frames import grid_url, image_url
from unmix.web.tabs import Tab


async def run(request: Request):
    web = web_of(request)
    f = await web.fields(request)
    entry = web.entry(f)
    y = web.image(f, entry)
    strength = f.float("strength", 0.5, 0.0, 1.0)
    s = web.sampling(f, entry, nfe=20, count=8)
    steer = web.steering(f, entry)
    cli = cli_line("edit", entry, "image.png", strength=strength, n=s["count"], sampler=s["sampler"], nfe=s["nfe"],
                   seed=s["seed"], **web.cli_steering(steer))

    def work(progress) -> dict:
        model = web.models.model(entry.name)
        x = model.edit(y, strength, s["count"], seed=s["seed"], sampler=s["sampler"], nfe=s["nfe"],
                       callback=streamed(progress), **steer)
        return {"image": grid_url(x), "cli": cli, "image_png": image_url(y)}

    return web.stream(work)


TAB = Tab("edit", "Edit", 40, [Route("/run", run, methods=["POST"])])
