"""The `unmix` command: a thin shell over the Python API.

Each command group lives in its own module and registers itself on the shared typer app.
"""
from __future__ import annotations

import importlib
import sys

from unmix.cli.app import app, run_app

# Command modules; each one decorates `app` when imported. Missing ones are simply absent.
_COMMAND_MODULES = ("demo", "train_cmd", "sample_cmd", "control_cmd", "eval_cmd")


def _register() -> None:
    for name in _COMMAND_MODULES:
        try:
            importlib.import_module(f"unmix.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"unmix.cli.{name}":
                raise


def main() -> None:
    _register()
    sys.exit(run_app())


__all__ = ["app", "main"]
