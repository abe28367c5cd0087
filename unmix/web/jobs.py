"""The queue between the page and the CPU: at most `jobs` sampling requests compute at once, the rest wait in
order (told their place), and each streams its frames as server-sent events while it runs.

The work runs in a thread; its sampler callback hands frames to the event loop and is also where a request
stops: when the client goes away (or the server stops, or the time limit passes) the next denoiser call raises.
The slot is freed when the thread has really finished, so the bound on concurrent work holds.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable

from unmix.errors import UnmixError

log = logging.getLogger("unmix.web")


class Cancelled(Exception):
    """Raised inside the work when nobody is waiting for its result any more."""


def event(name: str, payload: dict) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(payload)}\n\n"


class Progress:
    """What the work sees: `emit` a frame event, `check` whether to go on (raises Cancelled or UnmixError)."""

    def __init__(self, emit: Callable[[str, dict], None], max_seconds: float):
        self._emit, self.cancelled = emit, threading.Event()
        self.started, self.max_seconds, self.frames = time.perf_counter(), max_seconds, 0

    def check(self) -> None:
        if self.cancelled.is_set():
            raise Cancelled()
        if time.perf_counter() - self.started > self.max_seconds:
            raise UnmixError(f"stopped after {self.max_seconds:g} s, this server's limit for one request; "
                             "lower nfe or count")

    def frame(self, payload: dict) -> None:
        self.check()
        self.frames += 1
        self._emit("frame", {**payload, "frame": self.frames, "elapsed": time.perf_counter() - self.started})


class JobQueue:
    """A FIFO of sampling requests with `jobs` running at once and at most `max_waiting` waiting."""

    def __init__(self, jobs: int = 1, max_waiting: int = 64, max_seconds: float = 600.0, heartbeat: float = 0.5):
        self.jobs, self.max_waiting, self.max_seconds, self.heartbeat = jobs, max_waiting, max_seconds, heartbeat
        self.running = 0
        self.waiting: deque[asyncio.Future] = deque()
        self.active: set[Progress] = set()
        self.completed = 0

    def busy(self) -> bool:
        """True when a new request would exceed the queue's length (the page says so and sends nothing)."""
        return self.running >= self.jobs and len(self.waiting) >= self.max_waiting

    def stop_all(self) -> None:
        for p in list(self.active):
            p.cancelled.set()

    def _release(self) -> None:
        """Hand the slot to the first waiter still waiting, or free it."""
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.running -= 1

    async def stream(self, work: Callable[[Progress], dict]) -> AsyncIterator[str]:
        """Events for one request: `queued` (place in line) while it waits, `start`, a `frame` per denoiser call,
        then `done` (the work's result) or `error` (a one-line message). Closing the stream early cancels it."""
        loop = asyncio.get_running_loop()
        holding, progress = False, None
        try:
            if self.running < self.jobs and not self.waiting:
                self.running += 1
                holding = True
            else:
                fut = loop.create_future()
                self.waiting.append(fut)
                try:
                    while not fut.done():
                        yield event("queued", {"position": self.waiting.index(fut) + 1, "running": self.running})
                        await asyncio.wait([fut], timeout=self.heartbeat)
                finally:
                    holding = fut.done() and not fut.cancelled()  # _release handed this request the slot
                    if not holding:  # the client left while waiting
                        self.waiting.remove(fut)
                        fut.cancel()
            queue: asyncio.Queue = asyncio.Queue()

            def emit(name: str, payload: dict) -> None:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, (name, payload))
                except RuntimeError:  # the server has stopped: nobody is listening
                    progress.cancelled.set()

            progress = Progress(emit, self.max_seconds)
            yield event("start", {})
            self.active.add(progress)
            threading.Thread(target=self._run, args=(work, progress, emit, loop), name="unmix-web-job",
                             daemon=True).start()
            holding = False  # the thread frees the slot when it ends
            while True:
                name, payload = await queue.get()
                yield event(name, payload)
                if name in ("done", "error"):
                    break
        finally:
            if progress is not None:
                progress.cancelled.set()  # a no-op once done; stops the work when the client has gone
            if holding:
                self._release()

    def _run(self, work, progress: Progress, emit, loop) -> None:
        """The work, in its own thread: its result or its error as the stream's last event."""
        try:
            result = work(progress)
            emit("done", {**result, "frames": progress.frames, "elapsed": time.perf_counter() - progress.started})
        except Cancelled:
            emit("error", {"error": "cancelled"})
        except UnmixError as e:
            emit("error", {"error": str(e)})
        except Exception as e:  # a bug: say so in the page and keep serving
            log.exception("request failed")
            emit("error", {"error": f"internal error: {type(e).__name__}: {e}"})
        finally:
            try:
                loop.call_soon_threadsafe(self._finished, progress)
            except RuntimeError:  # the server has stopped
                pass

    def _finished(self, progress: Progress) -> None:
        self.active.discard(progress)
        self.completed += 1
        self._release()

