"""The user cache folder and crash-safe safetensors files in it.

Feature networks and reference statistics are derived data: rebuilt when missing, unreadable or stale,
so a corrupt file costs a rebuild, never a wrong number. Nothing here unpickles.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file, safe_open


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/unmix, or ~/.cache/unmix."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unmix"


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes: ties cached results to the exact data they came from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def save_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write to a temporary file in the same folder, then rename over `path` (readers never see half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_if_valid(path: Path, expect: dict[str, str]) -> dict[str, torch.Tensor] | None:
    """The tensors in `path` if it exists, reads cleanly and its metadata matches `expect`; else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if any(meta.get(k) != v for k, v in expect.items()):
            return None
        return load(path.read_bytes())  # in memory: a mapped file rewritten later would crash us (SIGBUS)
    except (SafetensorError, OSError, ValueError):
        return None


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
