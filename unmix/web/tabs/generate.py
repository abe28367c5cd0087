"""Generate: samples from a model with a label or a prompt, guidance, sampler, NFE, seed and count; the reverse process
streams live, the grid downloads as PNG, and the page shows the `unmix sample` line that draws the same images
(sample i uses seed + i whatever the batch, so the CLI's grid is this grid)."""
from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from unmix.web.context import cli_line, streamed, web_of
from unmix.web.frames import grid_url
from unmix.web.tabs import Tab


async def run(request: Request):
    web = web_of(request)
    f = await web.fields(request)
    entry = web.entry(f)
    s = web.sampling(f, entry)
    steer = web.steering(f, entry)
    cli = cli_line("sample", entry, n=s["count"], seed=s["seed"], sampler=s["sampler"], nfe=s["nfe"],
                   **web.cli_steering(steer))

    def work(progress) -> dict:
        model = web.models.model(entry.name)
        x = model.sample(s["count"], seed=s["seed"], sampler=s["sampler"], nfe=s["nfe"], batch_size=s["count"],
                         callback=streamed(progress), **steer)
        return {"image": grid_url(x), "cli": cli, "filename": f"{entry.name}-seed{s['seed']}-n{s['count']}.png"}

    return web.stream(work)


TAB = Tab("generate", "Generate", 20, [Route("/run", run, methods=["POST"])])
