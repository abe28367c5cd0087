"""Files and folders that are never seen half-written, safetensors read back safely, and the one cache folder.

Every write goes to a temporary sibling (same folder, so the same filesystem), is flushed to disk, and is
then renamed over the target with os.replace, which POSIX makes atomic: a reader, or a run after a crash,
finds either the old content or the new one, never a mixture. A failed write removes its temporary copy.
Safetensors files are read into memory (never mapped: a file replaced later would crash a mapping reader
with SIGBUS) and never unpickled.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, safe_open, save_file


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/unmix, or ~/.cache/unmix: derived data (rendered datasets, feature networks) that can be
    rebuilt, so deleting it is always safe. Not created here; writers create what they need."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "unmix"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, make_parents: bool = False) -> Iterator[Path]:
    """A temporary path to write `path`'s new content to; on a clean exit it is fsynced and renamed over `path`.

    The temporary name keeps `path`'s suffix, so writers that choose a format by suffix (or append one, like
    numpy.save) behave as they would on `path`. Parent folders are created only when `make_parents` is set.
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | os.PathLike, data: bytes, make_parents: bool = False) -> Path:
    """Write `data` to `path` atomically."""
    with atomic_path(path, make_parents) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str, make_parents: bool = False) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"), make_parents)


def save_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                     make_parents: bool = False) -> Path:
    """Save tensors (moved to the CPU, made contiguous) as a safetensors file, atomically."""
    with atomic_path(path, make_parents) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp, metadata=metadata)
    return Path(path)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A fresh hidden sibling folder to build `path` in; on a clean exit its files are fsynced and it takes
    `path`'s place (an existing folder is moved aside first, then deleted), so a crash at any point leaves the
    old folder or the new one, never a mixture.

    Temporary folders left by crashed writers of the same `path` are removed first: one writer per folder
    (hold a lock when several processes could write the same one).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.mkdir()
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
        _fsync(tmp)
        old = path.parent / f".{path.name}.old-{os.getpid()}"
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():  # put the old folder back rather than leave none
                os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
        _fsync(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_safetensors(path: str | os.PathLike, expect: dict[str, str] | None = None) -> dict[str, torch.Tensor] | None:
    """The tensors in `path`, read into memory, if the file exists, reads cleanly and its metadata holds every
    item of `expect`; else None (for caches: a missing, corrupt or stale file means a rebuild)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        meta = read_metadata(path)
        if any(meta.get(k) != v for k, v in (expect or {}).items()):
            return None
        return load(path.read_bytes())
    except (SafetensorError, OSError, ValueError):
        return None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (its header only)."""
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
