"""The `unmix` executable's entry point: the one place that turns Ctrl-C into exit code 130, at any moment.

The command modules (and PyTorch) are imported inside `main` on purpose. A KeyboardInterrupt raised while a
C extension such as numpy is half-initialised cannot be caught safely (re-importing it fails), so while they
load, Ctrl-C ends the process at once with the same one line and exit code instead of raising. Loading PyTorch
here is also what lets `main` choose OpenMP's wait policy first.
"""
from __future__ import annotations

import os
import signal
import sys

INTERRUPTED = "interrupted (Ctrl-C)"


def _exit_at_once(signum, frame):
    sys.stderr.write(INTERRUPTED + "\n")
    sys.stderr.flush()
    os._exit(130)


def _import_commands():
    """Import every command module with Ctrl-C ending the process at once (unless the caller handles SIGINT)."""
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if ours:
        signal.signal(signal.SIGINT, _exit_at_once)
    try:
        import unmix.cli.commands  # noqa: F401  registers every command on the app
        from unmix.cli.app import run_app
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    return run_app


def main() -> None:
    # OpenMP threads that finish early sleep instead of spinning (read once, when PyTorch loads): a spinning thread
    # keeps a core that another process, or this one's slower thread, needs (unmix.distributed.idle_cpus)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        code = _import_commands()()
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        code = 130
    sys.exit(code)
