"""scikit-learn's bundled handwritten digits: 1,797 images of 8x8 pixels, 17 grey levels (0..16), 10 classes.

The CSV that scikit-learn ships is read directly (importing scikit-learn takes seconds). Ink is
bright in the source and kept bright here (0 -> -1, 16 -> +1): samples show white digits on black.
"""
from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from unmix.data import Dataset
from unmix.errors import UnmixError


def _digits_csv() -> Path:
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise UnmixError("the digits dataset comes with scikit-learn; install it with `pip install scikit-learn`")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"


def load_digits() -> Dataset:
    path = _digits_csv()
    if path.is_file():
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float32)
        images, target = table[:, :64].reshape(-1, 8, 8), table[:, 64].astype(np.int64)
    else:  # a scikit-learn that stores the file elsewhere
        from sklearn.datasets import load_digits as sk_load

        d = sk_load()
        images, target = d.images.astype(np.float32), d.target
    x = torch.from_numpy(images)[:, None] / 8 - 1  # [1797, 1, 8, 8]
    return Dataset("digits", x, torch.from_numpy(target), [str(i) for i in range(10)])
