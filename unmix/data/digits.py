"""scikit-learn's bundled handwritten digits: 1,797 images of 8x8 pixels, 17 grey levels (0..16), 10 classes.

Read through scikit-learn's public `sklearn.datasets.load_digits` (the import takes a couple of seconds, so the
result is kept for the process). Ink is bright in the source and kept bright here (0 -> -1, 16 -> +1): samples
show white digits on black. The mapping k / 8 - 1 is exact in float32, so every user of `digits_images` (the
dataset, the feature space, the fitted Gaussian mixture) sees the same numbers.
"""
from __future__ import annotations

import functools

import torch

from unmix.data.dataset import Dataset
from unmix.errors import UnmixError

CLASS_NAMES = [str(i) for i in range(10)]


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise UnmixError("the digits dataset comes with scikit-learn; "
                         "install it with `pip install scikit-learn`") from None
    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 8 - 1  # [1797, 1, 8, 8]
    return images, torch.as_tensor(bunch.target, dtype=torch.long)


def digits_images() -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 [1797, 1, 8, 8] in [-1, 1], labels long [1797]); fresh copies, safe to modify."""
    images, labels = _digits()
    return images.clone(), labels.clone()


def load_digits() -> Dataset:
    images, labels = digits_images()
    return Dataset("digits", images, labels, list(CLASS_NAMES))
