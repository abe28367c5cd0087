"""`evaluate`: sample-quality numbers for a set of samples, against a bundled dataset or an image folder.

Images (digits, emoji, `folder:PATH`) are measured in the feature space of the dataset's own cached feature
network (unmix.metrics.features) against every image of the dataset: Fréchet distance, unbiased KID, precision
and recall (k = 3). The five-style emoji ("emoji:styles=S:split=P") have a feature space of their own, trained on
their train split, and FD to the held-out split besides (unmix.metrics.styles). The 2-D toys have exact densities,
so they get exact measures instead: sliced W2 against a fresh draw of the same size, and the gap in mean exact
log-density between that draw and the samples.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from unmix.errors import UnmixError
from unmix.metrics.distances import (
    fd_min_samples,
    frechet_distance_from_stats,
    kid,
    mean_cov,
    precision_recall,
)
from unmix.metrics.exact import log_density_gap, sliced_w2
from unmix.metrics.features import (
    BUNDLED,
    FEATURE_DATASETS,
    FEATURE_DIM,
    extract,
    is_folder,
    reference,
)
from unmix.metrics.styles import SIDES, SPEC, evaluate_styles, styles_spec
from unmix.metrics.toys import TOYS, toy_mixture

K_NEIGHBOURS = 3
DATASETS = (*FEATURE_DATASETS, SPEC, *TOYS)


def load_samples(path: str | os.PathLike) -> torch.Tensor:
    """Samples from a .npy file (read without pickle)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise UnmixError(f"{path} is not a plain .npy array of numbers ({e})") from None
    if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
        raise UnmixError(f"{path} must hold a numeric array, got {getattr(arr, 'dtype', type(arr))}")
    return torch.from_numpy(arr.astype(np.float64))


def as_batch(samples, shape: tuple[int, ...], data: str) -> torch.Tensor:
    """Samples as float64 [N, *shape]; images may come as NHW when they have one channel."""
    x = torch.as_tensor(samples).detach().to("cpu", torch.float64)  # the feature networks live on the CPU
    if x.ndim == len(shape) and len(shape) == 3 and shape[0] == 1:
        x = x.unsqueeze(1)
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        layout = "NCHW (or NHW for one channel)" if len(shape) == 3 else "[N, D]"
        raise UnmixError(f"samples of shape {list(x.shape)} do not match {data} items of shape {list(shape)}; "
                         f"expected {layout}")
    if not torch.isfinite(x).all():
        raise UnmixError("samples contain NaN or infinite values")
    return x


def min_samples(data: str) -> int:
    """Fewest samples every metric for `data` accepts."""
    if data in TOYS:
        return 2
    return max(fd_min_samples(FEATURE_DIM), K_NEIGHBOURS + 1)


def check_data(data: str) -> None:
    if not isinstance(data, str) or (data not in BUNDLED and data not in TOYS and not is_folder(data)
                                     and not data.startswith("emoji:")):
        raise UnmixError(f"cannot evaluate against {data!r}; valid: {', '.join(DATASETS)}")
    styles_spec(data)  # a five-style name that does not parse is one error line


def check_count(n: int, data: str) -> None:
    need = min_samples(data)
    if n < need:
        why = "two per set" if data in TOYS else "FD needs more samples than feature dimensions"
        raise UnmixError(f"{n} samples are too few to evaluate {data}: need at least {need} ({why}); "
                         f"1000 or more give stable numbers")


def _image_side(samples, data: str) -> int:
    """The side of square image samples (NCHW or NHW): a folder is read at the samples' size."""
    shape = tuple(torch.as_tensor(samples).shape)
    if len(shape) not in (3, 4) or shape[-1] != shape[-2] or shape[-1] < 1:
        raise UnmixError(f"samples of shape {list(shape)} are not square images; {data} expects NCHW "
                         "(or NHW for one channel) with height equal to width")
    return shape[-1]


def evaluate(samples, data: str = "digits", seed: int = 0) -> dict[str, float]:
    """Sample-quality metrics of `samples` (values in [-1, 1]) against dataset `data`.

    Images: {"fd", "kid", "precision", "recall", "n"}. Values are clamped to [-1, 1] first, as when saving
    images. A `folder:PATH` dataset is read at the samples' size and gets a feature network of its own, trained
    on first use and cached. Five-style emoji ("emoji:styles=all:split=train", 32 or 64 px samples) add
    "fd_heldout" and "heldout_real", the figures of the held-out real pictures (unmix.metrics.styles.
    evaluate_styles). 2-D toys: {"sliced_w2", "log_density_gap", "log_density", "n"} in nats.
    """
    check_data(data)
    if data in TOYS:
        return _evaluate_points(samples, data, seed)
    five = styles_spec(data)
    if five is not None:
        side = _image_side(samples, data)
        if side not in SIDES:
            raise UnmixError(f"the five-style emoji are measured at 32 or 64 px, got {side}x{side} samples")
        return evaluate_styles(_checked(samples, (3, side, side), data), five)
    name = "emoji" if data.startswith("emoji:") else data  # emoji:styles=noto without a split is plain emoji
    ref = reference(name, _image_side(samples, data) if is_folder(data) else None)
    feats = extract(ref.net, _checked(samples, ref.image_shape, data))
    fd = frechet_distance_from_stats(*mean_cov(feats), ref.mean, ref.cov)
    precision, recall = precision_recall(ref.features, feats, K_NEIGHBOURS)
    return {"fd": fd, "kid": kid(ref.features, feats), "precision": precision, "recall": recall, "n": len(feats)}


def _checked(samples, shape: tuple[int, ...], data: str) -> torch.Tensor:
    """Image samples as float64 [N, *shape] clamped to [-1, 1], enough of them, not pixel values."""
    x = as_batch(samples, shape, data)
    check_count(len(x), data)
    if x.min() >= 0 and x.max() > 1.5:
        raise UnmixError(f"sample values span [{x.min():.3g}, {x.max():.3g}]; they look like pixel values, "
                         "scale them to [-1, 1]")
    return x.clamp(-1, 1)


def _evaluate_points(samples, data: str, seed: int) -> dict[str, float]:
    x = as_batch(samples, (2,), data)
    check_count(len(x), data)
    mixture = toy_mixture(data)
    truth = mixture.sample(len(x), generator=torch.Generator().manual_seed(seed))
    gap = log_density_gap(mixture.log_prob, x, truth)
    return {"sliced_w2": sliced_w2(x, truth), "log_density_gap": gap,
            "log_density": float(mixture.log_prob(x).mean()), "n": len(x)}


def format_metrics(metrics: dict) -> list[str]:
    """One line per entry: name, then value (floats to 6 significant digits)."""
    width = max(map(len, metrics), default=0) + 2
    return [f"{k:<{width}}{v:.6g}" if isinstance(v, float) else f"{k:<{width}}{v}" for k, v in metrics.items()]
