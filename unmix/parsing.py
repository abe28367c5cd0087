"""The one parser for comma-separated lists the command line and the API accept ("1,2,2", "3,7,42")."""
from __future__ import annotations

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
