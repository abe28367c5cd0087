"""What every route shares: the models, the limits and the queue (`Web`, reached as `web_of(request)`), reading a
request within the limits, streaming a queued job as server-sent events, and the CLI line that repeats a request."""
from __future__ import annotations

import asyncio
import json
import shlex

import torch
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from unmix.errors import UnmixError
from unmix.samplers import list_samplers, sampling_defaults
from unmix.web.frames import reverse_frame
from unmix.web.jobs import JobQueue
from unmix.web.limits import Fields, Limits
from unmix.web.models import Entry, Models
from unmix.web.uploads import read_image_url


class EventStream(StreamingResponse):
    """Server-sent events whose generator is always closed when the response ends, so that a client that goes
    away mid-stream frees its place in the queue at once (not when the generator is garbage-collected)."""

    media_type = "text/event-stream"

    def __init__(self, events):
        super().__init__(events, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()


class Web:
    """What every route shares: the models, the limits, the queue, and reading a request within the limits."""

    def __init__(self, models: Models, limits: Limits):
        self.models, self.limits = models, limits
        self.queue = JobQueue(limits.jobs, limits.max_waiting, limits.max_seconds)
        self.decoding = asyncio.Semaphore(limits.uploads)  # bounds the memory that decoding uploads can take

    async def fields(self, request: Request) -> Fields:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise UnmixError("send the request as JSON (Content-Type: application/json)")
        body = await read_body(request, self.limits.max_body_bytes)
        try:
            return Fields(json.loads(body))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise UnmixError("the request body is not valid JSON") from None

    def entry(self, f: Fields, task: str = "image") -> Entry:
        """The request's model, which must be made for this tab's task (image models, or product-photo models)."""
        return self.models.entry(f.text("model"), task)

    def image(self, f: Fields, entry: Entry, name: str = "image") -> torch.Tensor:
        if f.get(name) is None:
            raise UnmixError(f"choose an image first ({name} is missing)")
        return read_image_url(f.get(name), entry.shape, name)

    def sampling(self, f: Fields, entry: Entry | None = None, nfe: int = 32, count: int = 16) -> dict:
        """sampler, nfe, seed and count, bounded; sampler and nfe default to the model's own (a distilled model's)."""
        lim = self.limits
        sampler, nfe = sampling_defaults(entry.config.get("sampling") if entry is not None else None, default_nfe=nfe)
        return {"sampler": f.choice("sampler", sampler, list_samplers()),
                "nfe": f.int("nfe", nfe, 1, lim.max_nfe), "seed": f.int("seed", 0, 0, 2**31 - 1),
                "count": f.int("count", count, 1, lim.max_count)}

    def steering(self, f: Fields, entry: Entry) -> dict:
        """What the request steers with, as Model.sample / inpaint / edit keywords: a label (class-conditional
        models) or a prompt and negative prompt (text models), and the guidance scale with either."""
        label, prompt = f.text("label"), f.text("prompt", max_len=500)
        negative = f.text("negative_prompt", max_len=500)
        if label is not None and label not in entry.describe()["classes"] and \
                not (label.isdigit() and int(label) < entry.num_classes):
            raise UnmixError(f"unknown label {label!r} for model {entry.name}")
        guidance = f.float("guidance", None, 0.0, 100.0) if label is not None or prompt is not None else None
        out = {"labels": label, "guidance": guidance, "prompts": prompt, "negative_prompt": negative}
        return {k: v for k, v in out.items() if v is not None}

    def cli_steering(self, steer: dict) -> dict:
        """The same, as the CLI's options."""
        return {"label": steer.get("labels"), "prompt": steer.get("prompts"),
                "negative_prompt": steer.get("negative_prompt"), "guidance": steer.get("guidance")}

    def stream(self, work) -> Response:
        """Queue `work(progress)` and stream its frames; a full queue is a message, not a wait."""
        if self.queue.busy():
            return JSONResponse({"error": f"the server is busy ({len(self.queue.waiting)} requests waiting); "
                                          "try again shortly"}, status_code=503)
        return EventStream(self.queue.stream(work))


def cli_line(command: str, entry: Entry, *args: str, **options) -> str:
    """The `unmix ...` command that reproduces a request (options set to None are left out)."""
    words = ["unmix", command, shlex.quote(entry.path), *map(shlex.quote, args)]
    for key, v in options.items():
        if v is not None:
            words += [f"--{key.replace('_', '-')}", shlex.quote(str(v))]
    return " ".join(words)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused as soon as it passes `limit` bytes (whatever Content-Length claims)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise UnmixError(f"the request is larger than this server's limit of {limit / 2**20:g} MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def web_of(request: Request) -> Web:
    return request.app.state.web


def streamed(progress, nrow: int | None = None):
    """A sampler callback (step, sigma, x, x0_hat) that streams each denoiser call as a frame."""
    def callback(step, sigma, x, x0_hat):
        progress.frame(reverse_frame(step, sigma, x, x0_hat, nrow))

    return callback
