"""`unmix serve`: the local web page (unmix.web) over one or more trained models."""
from __future__ import annotations

import typer

from unmix.cli.app import app
from unmix.cli.options import device_option, threads_option
from unmix.distributed import pick_device
from unmix.web import require_extra
from unmix.web.limits import Limits


@app.command()
def serve(
    runs: list[str] = typer.Argument(None, help="Run or checkpoint folders to serve (default: every image or "
                                                "product-photo model found under ./runs)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; anything but a loopback address lets other "
                                               "machines in."),
    port: int = typer.Option(7860, min=0, max=65535, help="Port (0: any free port; the URL is printed)."),
    jobs: int = typer.Option(1, min=1, max=64, help="Sampling requests computed at once; the others queue."),
    max_nfe: int = typer.Option(200, "--max-nfe", min=1, max=10000, help="Largest NFE one request may ask for."),
    max_count: int = typer.Option(64, "--max-count", min=1, max=4096, help="Most images one request may ask for."),
    device: str = device_option(),
    threads: int = threads_option(),
):
    """Serve the web page: watch noise spread and un-mix live, generate, inpaint, edit and clean product photos, at
    http://HOST:PORT/."""
    require_extra()
    from unmix.web.server import serve as run_server  # after the check: it imports starlette and uvicorn

    run_server(runs or None, host=host, port=port, device=pick_device(device),
               limits=Limits(jobs=jobs, max_nfe=max_nfe, max_count=max_count))
