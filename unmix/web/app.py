"""The Starlette application: the page (a shell plus one fragment per tab), the routes every tab shares (models,
example images, uploads) and each tab's own routes under /api/<tab>/.

Nothing here leaves the machine: the page loads only from this server (a content security policy says so), and
while the server listens on a loopback address it answers only requests addressed to a loopback name.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from importlib.resources import files

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from unmix.errors import UnmixError
from unmix.inpaint import METHODS
from unmix.samplers import DEFAULT_SAMPLER, list_samplers
from unmix.web.context import Web, read_body, web_of
from unmix.web.frames import image_url
from unmix.web.limits import Fields, Limits
from unmix.web.models import Models
from unmix.web.tabs import Tab, load_tabs
from unmix.web.uploads import read_upload

LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
CSP = ("default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
       "script-src 'self' 'unsafe-inline'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'")


async def page(request: Request) -> Response:
    return HTMLResponse(request.app.state.page, headers={"Content-Security-Policy": CSP})


async def model_list(request: Request) -> Response:
    web = web_of(request)
    lim = web.limits
    return JSONResponse({"models": [e.describe() for e in web.models.entries.values()], "samplers": list_samplers(),
                         "default_sampler": DEFAULT_SAMPLER, "methods": list(METHODS),
                         "limits": {"max_nfe": lim.max_nfe, "max_count": lim.max_count, "max_frames": lim.max_frames,
                                    "max_upload_bytes": lim.max_upload_bytes, "max_calls": lim.max_calls}})


async def queue_state(request: Request) -> Response:
    """How many sampling requests are running, waiting and finished (for the page's status and for tests)."""
    q = web_of(request).queue
    return JSONResponse({"running": q.running, "waiting": len(q.waiting), "completed": q.completed, "jobs": q.jobs})


async def dataset_image(request: Request) -> Response:
    """Item `index` of the model's training data, at the model's size."""
    web = web_of(request)
    entry = web.models.entry(request.query_params.get("model"), "image")

    def pick():
        ds = web.models.dataset(entry.name)
        index = Fields(dict(request.query_params)).int("index", 0, 0, len(ds) - 1)
        x, y = ds.batch(torch.tensor([index]))
        label = None if y is None else ds.class_names[int(y[0])]
        return {"image": image_url(x[0]), "index": index, "size": len(ds), "label": label}

    return JSONResponse(await run_in_threadpool(pick))


async def upload(request: Request) -> Response:
    """An uploaded file (the raw request body), checked, decoded and fitted to the model's size."""
    web = web_of(request)
    entry = web.models.entry(request.query_params.get("model"), "image")
    lim = web.limits
    data = await read_body(request, lim.max_upload_bytes)
    async with web.decoding:
        x = await run_in_threadpool(read_upload, data, entry.shape, lim.max_upload_bytes, lim.max_upload_side,
                                    lim.max_upload_pixels)
    return JSONResponse({"image": image_url(x)})


async def user_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=400)


def build_page(tabs: list[Tab]) -> str:
    shell = (files("unmix.web") / "static" / "index.html").read_text(encoding="utf-8")
    nav = "\n".join(f'<button type="button" class="tab-button" data-tab="{t.name}" data-task="{t.task}">{t.title}</button>'
                    for t in tabs)
    body = "\n".join(f'<section class="tab" id="tab-{t.name}" data-tab="{t.name}" data-task="{t.task}" hidden>\n'
                     f'{t.fragment}\n</section>' for t in tabs)
    return shell.replace("<!-- NAV -->", nav).replace("<!-- TABS -->", body)


def create_app(models: Models, limits: Limits | None = None, loopback_only: bool = True) -> Starlette:
    """The application for these models: the page at /, shared routes under /api/, each tab's under /api/<tab>/."""
    limits = limits or Limits()
    tabs = load_tabs()
    web = Web(models, limits)
    routes = [
        Route("/", page),
        Route("/api/models", model_list),
        Route("/api/queue", queue_state),
        Route("/api/dataset", dataset_image),
        Route("/api/upload", upload, methods=["POST"]),
        *[Mount(f"/api/{t.name}", routes=t.routes) for t in tabs],
        Mount("/static", StaticFiles(directory=str(files("unmix.web") / "static")), name="static"),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=list(LOOPBACK))] if loopback_only else []

    @asynccontextmanager
    async def lifespan(app):
        yield
        web.queue.stop_all()  # running requests stop at their next denoiser call

    app = Starlette(routes=routes, middleware=middleware, exception_handlers={UnmixError: user_error},
                    lifespan=lifespan)
    app.state.web, app.state.page = web, build_page(tabs)
    return app
