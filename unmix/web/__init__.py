"""The local web page (`unmix serve`): the forward and reverse processes shown live, and generate, inpaint and
edit a few clicks away. A thin shell over the Python API: every picture it shows comes from a library call.

Built on Starlette + uvicorn with a hand-written page (unmix/web/static, tab fragments in unmix/web/tabs): light
to install and import, and every route testable with plain HTTP. Streams are server-sent events read by `fetch`,
so a request is cancelled by closing it. Optional: `pip install -e ".[web]"`.
"""
from __future__ import annotations

from importlib.util import find_spec

from unmix.errors import UnmixError

EXTRA = ("starlette", "uvicorn")


def require_extra() -> None:
    """One clear line when the [web] extra is not installed (instead of an ImportError traceback)."""
    missing = [name for name in EXTRA if find_spec(name) is None]
    if missing:
        raise UnmixError(f"the web page needs {' and '.join(missing)}, from the web extra: pip install -e '.[web]'")
