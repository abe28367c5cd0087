"""One writer per run folder: an advisory lock file held for as long as a training process writes there.

The lock is `OUT/.lock`, held with flock (released by the kernel when the process dies, even by kill -9),
and it records the holder's pid and host. A second training into the same folder is refused while the
first runs; a lock file left by a process that no longer exists is reported and taken over.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from pathlib import Path

from unmix.errors import UnmixError

LOCK_NAME = ".lock"


class RunLock:
    """Context manager: `with RunLock(out): ...` holds OUT/.lock or raises UnmixError naming the holder."""

    def __init__(self, folder: str | os.PathLike, enabled: bool = True):
        self.path = Path(folder) / LOCK_NAME
        self.enabled = enabled
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        if not self.enabled:
            return self
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise UnmixError(f"{folder} is a file; the run's output must be a folder (choose another out=)")
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        previous = _read(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UnmixError(_in_use(folder, previous)) from None
        if previous.get("pid"):
            print(f"note: {folder} had a lock from process {previous['pid']} on {previous.get('host')}, which "
                  "ended without releasing it; taking it over", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # an empty lock file means "released cleanly"
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def ensure_free(folder: str | os.PathLike) -> None:
    """Raise the same UnmixError as RunLock if another process holds FOLDER's lock; for checking before any work
    starts (or anything is printed). Takes nothing: the lock is held only by RunLock."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UnmixError(_in_use(path.parent, _read(fd))) from None
    finally:
        os.close(fd)  # closing releases the probe's shared lock


def _in_use(folder: Path, holder: dict) -> str:
    who = f"process {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
    return f"{folder} is in use by {who}, which is training into it; wait for it to finish, or choose another out="


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 4096, 0)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
