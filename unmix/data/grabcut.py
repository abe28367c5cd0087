"""A classical foreground mask for product photos: OpenCV's GrabCut (Rother et al. 2004) with no user input.

Product models (unmix.data.product_job.ProductJob) take it as a second condition beside the photo, so the diffusion
refines a coarse mask instead of finding the product from nothing (the idea of SegRefiner, Wang et al. 2023,
which refines any segmenter's masks by diffusion). On a CPU budget that is the difference between blobs and masks
that beat GrabCut itself (docs/product_photos.md). Afterwards GrabCut seeded by the model's soft alpha
(`grabcut_refine`) moves the uncertain border pixels onto the photo's own colour edges. OpenCV is the optional
`product` extra.
"""
from __future__ import annotations

import numpy as np
import torch

from unmix.errors import UnmixError


def _cv2():
    try:
        import cv2
    except ImportError:
        raise UnmixError("product photos need OpenCV for GrabCut: pip install opencv-python-headless "
                         "(or pip install -e '.[product]')") from None
    return cv2


def _bgr(photo: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> OpenCV's uint8 BGR [H, W, 3]."""
    img = ((photo.detach().cpu().float().permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255)
    return np.ascontiguousarray(img.astype(np.uint8)[..., ::-1])


def _grabcut(photo: torch.Tensor, mask: np.ndarray, rect, iterations: int) -> torch.Tensor | None:
    """Run GrabCut on `mask` (OpenCV's labels, updated in place) from `rect` (None: from the mask's labels);
    the foreground (sure + probable) [1, H, W] in {0, 1}, or None where OpenCV finds nothing to separate."""
    cv2 = _cv2()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    try:
        cv2.grabCut(_bgr(photo), mask, rect, bgd, fgd, iterations,
                    cv2.GC_INIT_WITH_MASK if rect is None else cv2.GC_INIT_WITH_RECT)
    except cv2.error:  # a degenerate rectangle, a single-colour region, or no seed of one side
        return None
    fg = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return torch.from_numpy(fg.astype(np.float32))[None]


def grabcut_mask(photo: torch.Tensor, box: tuple[int, int, int, int] | None = None,
                 iterations: int = 5) -> torch.Tensor:
    """GrabCut's foreground (sure + probable) [1, H, W] in {0, 1} of a photo [3, H, W] in [-1, 1]. `box` is the
    product's (top, left, height, width) when a user drew one; None: the whole frame less a 1-px border.
    Deterministic (OpenCV's generator is reseeded per call); an all-one-colour photo gives an empty mask."""
    h, w = photo.shape[1:]
    if box is None:
        rect = (1, 1, max(1, w - 2), max(1, h - 2))
    else:
        top, left, bh, bw = box
        x0, y0 = max(left, 0), max(top, 0)
        rect = (x0, y0, max(1, min(left + bw, w) - x0), max(1, min(top + bh, h) - y0))
    found = _grabcut(photo, np.zeros((h, w), np.uint8), rect, iterations)
    return torch.zeros(1, h, w) if found is None else found


SURE = 0.95  # a seed alpha above this is taken as sure product by grabcut_refine, below 1 - SURE as sure background


def grabcut_refine(photo: torch.Tensor, alpha: torch.Tensor, iterations: int = 3) -> torch.Tensor:
    """A soft alpha [1, H, W] in [0, 1] (a product model's estimate) snapped to the photo's own edges: GrabCut
    seeded by the alpha instead of a rectangle (above SURE sure product, below 1 - SURE sure background, between
    them probable product or background by the side of 0.5), so its colour models decide only the uncertain
    pixels. The hard mask [1, H, W] in {0, 1}; the seed's own 0.5 cut where GrabCut cannot run or would lose the
    product altogether."""
    cv2 = _cv2()
    a = alpha[0].detach().cpu().float().numpy()
    mask = np.where(a > 0.5, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[a > SURE] = cv2.GC_FGD
    mask[a < 1 - SURE] = cv2.GC_BGD
    found = _grabcut(photo, mask, None, iterations)
    return (alpha > 0.5).float().cpu() if found is None or not found.any() else found


def with_grabcut(photos: torch.Tensor) -> torch.Tensor:
    """A product model's condition: photos [N, 3, S, S] in [-1, 1] -> [N, 4, S, S], the photo and its GrabCut
    mask (in -1..1) as a fourth channel."""
    masks = torch.stack([grabcut_mask(p) for p in photos]).to(photos.device, photos.dtype)
    return torch.cat([photos, masks * 2 - 1], 1)


__all__ = ["grabcut_mask", "grabcut_refine", "with_grabcut"]
