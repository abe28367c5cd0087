"""Where the metrics cache their feature networks and reference statistics, and the key that ties them to data.

These files are derived data: written atomically with unmix.store.files and read back with
fsutil.load_safetensors, which treats a missing, corrupt or stale file as absent, so a bad file costs a
rebuild, never a wrong number.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from unmix.store.files import cache_dir


def metrics_dir() -> Path:
    """cache_dir() / "metrics"."""
    return cache_dir() / "metrics"


def fingerprint(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes: ties cached results to the exact data they came from."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
