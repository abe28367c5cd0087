"""The typer application and the one rule for user errors: one line on stderr, exit code 2.

Library errors speak Python (`lr=`, `label=`); `as_flags` words them as the command line's flags. `--debug`
(or UNMIX_DEBUG=1) shows the traceback instead.
"""
from __future__ import annotations

import os
import re
import sys

import typer

from unmix.errors import UnmixError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="unmix: train, sample, steer and measure denoising diffusion models.",
)

# The one table of Python names whose flag is spelled differently (a TrainConfig field; "net." a network setting;
# an API argument); every other `name=` is `--name`. `as_flags` words errors with it, `unmix train` reads flags with it.
PYTHON_TO_FLAG = {"min_snr_gamma": "min-snr", "ema_halflife_kimg": "ema-halflife", "net.channels": "channels",
                  "net.channel_mult": "channel-mult", "net.num_res_blocks": "blocks", "net.attn_levels": "attn",
                  "net.dropout": "dropout", "net.patch_size": "patch", "net.layout": "layout",
                  "net.neighbours": "neighbours", "net.neighbours_leave_out": "leave-out",
                  "net.neighbours_patch": "local-patch", "labels": "label",
                  "prompts": "prompt"}
_BY_NAME = {name.removeprefix("net."): "--" + flag for name, flag in PYTHON_TO_FLAG.items()}


def as_flags(message: str) -> str:
    """`lr=0.1` -> `--lr 0.1`, `resume=True` -> `--resume`: a library message in the command line's words."""
    message = message.replace("resume=True", "--resume")

    def flag(m: re.Match) -> str:
        name = m.group(1)
        return _BY_NAME.get(name, "--" + name.replace("_", "-")) + " "

    return re.sub(r"(?<![\w.-])([a-z][a-z0-9_]*)=(?!=)(\s?)", flag, message).rstrip()


def version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"unmix {version('unmix')}")
        except PackageNotFoundError:
            print("unmix (not installed)")
        raise typer.Exit()


@app.callback()
def root(ctx: typer.Context,
         version: bool = typer.Option(False, "--version", callback=version_callback, is_eager=True,
                                      help="Print the version and exit.")):
    """unmix: train, sample, steer and measure denoising diffusion models."""
    if ctx.invoked_subcommand is None:
        print(ctx.get_help())
        raise typer.Exit()


def _error(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_app(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors become one line and exit code 2, Ctrl-C exit code 130."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("UNMIX_DEBUG") == "1"
    if "--debug" in argv:
        argv.remove("--debug")
        debug = True
    try:
        result = app(args=argv, standalone_mode=False, prog_name="unmix")
    except UnmixError as e:
        if debug:
            raise
        return _error(as_flags(str(e)))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError) as e:
        if debug:
            raise
        return _error(f"{e.strerror or e}: {e.filename}")
    except OSError as e:  # disk full, read-only file system, ...
        if debug:
            raise
        return _error(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
    except typer.Exit as e:
        return int(getattr(e, "exit_code", 0) or 0)
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except typer.TyperException as e:  # usage errors: bad flag, bad value, missing argument
        if debug:
            raise
        return _error(e.format_message() if hasattr(e, "format_message") else str(e))
    if result == 130:  # typer's answer to a Ctrl-C inside a command
        print("interrupted (Ctrl-C)", file=sys.stderr)
        return 130
    return result if isinstance(result, int) else 0
