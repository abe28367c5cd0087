"""Product photos: a photo of any size in, the product on white (*clean*), centred on a white square (*square*) or
in a new background with its pixels unchanged (*scene*) out, at the photo's size, by a model trained with
`unmix train --data product`. The photo travels as the request's raw body (it may be far larger than the JSON
requests of the other tabs); the settings travel in the query string."""
from __future__ import annotations

import torch
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from unmix.errors import UnmixError
from unmix.web.context import cli_line, read_body, web_of
from unmix.web.frames import image_url, reverse_frame
from unmix.web.limits import Fields
from unmix.web.tabs import Tab
from unmix.web.uploads import read_photo_upload

JOBS = ("clean", "square", "scene")  # unmix.apps.product.JOBS and METHODS, without importing the module at start-up
METHODS = ("mean", "sample")
EDGES = ("snap", "model")  # snap: refine=True, the cut-out snapped to the photo's edges; model: the model's own alpha
CLEAN_NFE, FILL_NFE, REPAINT_REPEATS = 33, 20, 4  # unmix.apps.product's defaults: finding the product, drawing around it
EXAMPLE_SIDE, EXAMPLES = 128, 10_000


def _frames(progress):
    """A sampler callback showing [alpha, photo] states as two pictures: the alpha in grey beside the photo (a
    backdrop model's RGB states as they are)."""
    def split(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t[:, :1].expand(-1, 3, -1, -1), t[:, 1:]])

    def callback(step, sigma, x, x0_hat):
        if x.shape[1] == 3:
            progress.frame(reverse_frame(step, sigma, x, x0_hat, nrow=1))
        else:
            progress.frame(reverse_frame(step, sigma, split(x), split(x0_hat), nrow=2))

    return callback


async def example(request: Request):
    """Item `index` of the held-out cluttered photos (products and backgrounds never drawn in training)."""
    web = web_of(request)
    f = Fields(dict(request.query_params))
    entry = web.models.entry(f.text("model"), "product")
    index = f.int("index", 0, 0, EXAMPLES - 1)

    def draw():
        from unmix.data.products import ProductTriples

        level = entry.data.get("level") or "clutter"
        busy = ProductTriples(EXAMPLE_SIDE, level, "test", length=EXAMPLES).item(index)[0]
        return {"image": image_url(busy), "index": index, "size": EXAMPLES}

    return JSONResponse(await run_in_threadpool(draw))


async def run(request: Request):
    """One job on the uploaded photo, streamed: finding the product (alpha), then for square and scene drawing
    around it, every denoiser call a frame."""
    web, lim = web_of(request), web_of(request).limits
    f = Fields(dict(request.query_params))
    entry = web.models.entry(f.text("model"), "product")
    job = f.choice("job", "clean", JOBS)
    seed = f.int("seed", 0, 0, 2**31 - 1)
    method = f.choice("find", "mean", METHODS)  # "method" names the inpainting tab's select on the page
    refine = f.choice("edges", "snap", EDGES) == "snap"
    nfe = f.int("nfe", CLEAN_NFE if job == "clean" else FILL_NFE, 2, lim.max_nfe)
    guidance = f.float("guidance", None, 0.0, 100.0)
    backdrop = f.text("backdrop") or None
    if backdrop is not None and job != "scene":
        raise UnmixError(f"a backdrop model draws scenes; the {job} job takes none")
    scenery = None if backdrop is None else web.models.entry(backdrop, "image")
    if scenery is not None and (len(scenery.shape) != 3 or scenery.shape[0] != 3):
        raise UnmixError(f"{backdrop} cannot draw backdrops: it is not a model of RGB images")
    finding = (nfe if job == "clean" else CLEAN_NFE) if method == "sample" else 1
    calls = (finding + (0 if job == "clean" else nfe * REPAINT_REPEATS)) * (1 if guidance is None else 2)
    if calls > lim.max_calls:
        raise UnmixError(f"{job} with nfe={nfe} costs about {calls} network passes; this server's limit is "
                         f"{lim.max_calls}")
    data = await read_body(request, lim.max_upload_bytes)
    async with web.decoding:
        photo = await run_in_threadpool(read_photo_upload, data, lim.max_upload_bytes, lim.max_upload_side,
                                        lim.max_photo_pixels)
    cli = cli_line(f"product {job}", entry, "photo.png", *([] if refine else ["--no-refine"]), out=f"{job}.png",
                   seed=seed, nfe=nfe, method=None if method == "mean" else method, guidance=guidance,
                   backdrop=None if scenery is None else scenery.path)

    def work(progress) -> dict:
        from unmix.apps.product import run_job

        drawer = None if scenery is None else web.models.model(scenery.name)
        out = run_job(job, web.models.model(entry.name), photo, seed=seed, nfe=nfe, method=method, refine=refine,
                      guidance=guidance, backdrop=drawer, callback=_frames(progress))
        return {"image": image_url(out), "cli": cli, "filename": f"{job}-seed{seed}.png",
                "size": [int(out.shape[-1]), int(out.shape[-2])]}

    return web.stream(work)


TAB = Tab("product", "Product photos", 50, [Route("/run", run, methods=["POST"]), Route("/example", example)],
          task="product")
