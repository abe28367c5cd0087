"""Serving the page: find the models, bind the socket first (so a taken port is one clear error before anything
starts), then run uvicorn on it until interrupted."""
from __future__ import annotations

import socket
import sys

import uvicorn

from unmix.errors import UnmixError
from unmix.web.app import LOOPBACK, create_app
from unmix.web.limits import Limits
from unmix.web.models import Models, discover


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise UnmixError(f"cannot listen on host {host!r} ({e.strerror}); give an address such as 127.0.0.1") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        raise UnmixError(f"cannot listen on {host}:{port} ({e.strerror}); pass another port= or host=") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def serve(runs: list[str] | None = None, host: str = "127.0.0.1", port: int = 7860, device="cpu",
          limits: Limits | None = None, root: str = "runs") -> None:
    """Serve the page for these run or checkpoint folders (default: every image model under `root`) until
    interrupted. It is ready once its URL (printed on stdout) answers HTTP 200."""
    limits = limits or Limits()
    entries, notes = discover(runs, root, limits.max_model_side)
    sock = bind(host, port)
    app = create_app(Models(entries, device), limits, loopback_only=host in LOOPBACK)
    for note in notes:
        print(note, file=sys.stderr)
    print(f"serving {url_of(sock)} ({len(entries)} model{'s' * (len(entries) != 1)}: "
          f"{', '.join(e.name for e in entries)}); Ctrl-C stops it", flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
