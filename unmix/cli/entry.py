"""The `unmix` executable's entry point: the one place that turns Ctrl-C into exit code 130, at any moment.

The command modules (and PyTorch) are imported inside `main` on purpose: a Ctrl-C that arrives while they load
must still end with one line and a non-zero exit, not a traceback and not exit 0.
"""
from __future__ import annotations

import sys


def main() -> None:
    try:
        import unmix.cli.commands  # noqa: F401  registers every command on the app
        from unmix.cli.app import run_app

        code = run_app()
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C)", file=sys.stderr)
        code = 130
    sys.exit(code)
