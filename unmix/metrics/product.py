"""Per-image measures for product photos: PSNR and SSIM against the white-background truth, mask IoU.

All take images in [-1, 1], NCHW, and return one value per image [N] (a benchmark reports medians).
SSIM is Wang et al. 2004 (IEEE TIP, eq. 13) with their constants K1 = 0.01, K2 = 0.03 and an 11-tap Gaussian window
of sigma 1.5, computed per channel over the valid region (no padding) and averaged: the settings of
`skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=2)`, which the tests check it against.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """10 log10(peak^2 / MSE) per image, with the peak-to-peak range 2 of [-1, 1] (= PSNR of the 0..255 images);
    identical images give +inf."""
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse)


def _window(sigma: float = 1.5, radius: int = 5) -> torch.Tensor:
    k = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float64) ** 2 / (2 * sigma ** 2))
    return k / k.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Mean SSIM per image (Wang et al. 2004), Gaussian window sigma 1.5 (11 taps), valid region only."""
    x, y = x.double(), y.double()
    n, c, h, w = x.shape
    k = _window()
    r = len(k) // 2
    if min(h, w) < 2 * r + 1:
        raise ValueError(f"ssim needs images of at least {2 * r + 1} px, got {h}x{w}")

    def blur(t):  # separable, valid region, per channel
        t = t.reshape(n * c, 1, *t.shape[2:])
        t = F.conv2d(t, k.reshape(1, 1, 1, -1))
        return F.conv2d(t, k.reshape(1, 1, -1, 1)).reshape(n, c, h - 2 * r, w - 2 * r)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def mask_iou(pred: torch.Tensor, truth: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Intersection over union of the binary masks (value > threshold) per image; two empty masks give 1."""
    p, t = (pred > threshold).flatten(1), (truth > threshold).flatten(1)
    inter, union = (p & t).sum(1).double(), (p | t).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def composite_on_white(busy: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The photo's pixels where alpha is 1, white where it is 0: busy * a + 1 * (1 - a), in [-1, 1]."""
    return busy * alpha + (1 - alpha)


__all__ = ["psnr", "ssim", "mask_iou", "composite_on_white"]
