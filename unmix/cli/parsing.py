"""The one parser for the lists the command line and the API accept: comma-separated ("1,2,2", "3,7,42") and
prompt files (one prompt per line)."""
from __future__ import annotations

import os
from pathlib import Path

from unmix.errors import UnmixError


def int_list(text: str | None, name: str) -> list[int] | None:
    """'1,2,2' -> [1, 2, 2]; None stays None; anything else is one clear error naming `name`."""
    if text is None:
        return None
    try:
        return [int(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise UnmixError(f"{name} takes comma-separated integers, e.g. 1,2,2; got {text!r}") from None


def str_list(text: str | None) -> list[str] | None:
    """'a, b' -> ['a', 'b'] (one item stays a list of one); None stays None."""
    return None if text is None else [p.strip() for p in str(text).split(",")]


def read_prompts(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a prompts file (UTF-8)."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise UnmixError(f"cannot read prompts file {path}: {e}") from None
    lines = [line for line in lines if line]
    if not lines:
        raise UnmixError(f"prompts file {path} has no prompts (one per line)")
    return lines
