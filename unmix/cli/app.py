"""The typer application and the one rule for user errors: one line on stderr, exit code 2."""
from __future__ import annotations

import os
import sys

import typer

from unmix.errors import UnmixError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="unmix: train, sample, steer and measure denoising diffusion models.",
)


def fail(message: str) -> None:
    """Raise the user-facing error every command uses for bad input."""
    raise UnmixError(message)


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line and exit code 2 (set UNMIX_DEBUG=1 or --debug for tracebacks)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("UNMIX_DEBUG") == "1"
    if "--debug" in argv:
        argv.remove("--debug")
        debug = True
    try:
        app(args=argv, standalone_mode=False)
    except UnmixError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        if debug:
            raise
        print(f"error: {e.strerror or e}: {e.filename}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # typer's own exits (--help)
        return int(e.code or 0)
    except Exception as e:  # click usage errors (bad flag) arrive here in non-standalone mode
        import click

        try:  # typer >= 0.20 raises its vendored copy of click's exceptions
            from typer._click import exceptions as vendored
        except ImportError:
            vendored = click.exceptions
        if isinstance(e, (click.exceptions.ClickException, vendored.ClickException)):
            if debug:
                raise
            print(f"error: {e.format_message()}", file=sys.stderr)
            return 2
        if isinstance(e, (click.exceptions.Abort, getattr(vendored, "Abort", click.exceptions.Abort),
                          getattr(typer, "Abort", click.exceptions.Abort))):
            print("aborted", file=sys.stderr)
            return 130
        raise
    return 0
