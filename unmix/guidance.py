"""Classifier-free guidance (Ho & Salimans 2022) as a denoiser wrapper, so every sampler gets it.

    D_w(x, s, c) = D(x, s, none) + w * (D(x, s, c) - D(x, s, none))

w = 1 is plain conditional sampling, w = 0 unconditional, w > 1 pushes samples towards what makes
the label likely. "none" is the reserved class index num_classes that training uses for dropped
labels; for a text model (cond a TextCond) it is `uncond`, the null caption's embedding that training
drops captions to, or a negative prompt's embedding, which then pushes samples away from that prompt
(the negative prompts of Stable Diffusion's tools). Guidance may be limited to a sigma interval
(Kynkaenniemi et al. 2024): outside it the wrapper returns the conditional denoiser alone.

NFE: the conditional and unconditional halves go through the network as ONE call on a batch of
2N rows, and one call is one evaluation, as everywhere in unmix. A guided step therefore costs one
NFE but about twice the compute of an unguided one; steps outside the interval cost N rows.
"""
from __future__ import annotations

import math

import torch

from unmix.conditioning import TextCond
from unmix.conditioning import cat as cat_cond
from unmix.denoiser import as_denoiser, sigma_batch
from unmix.errors import UnmixError

DEFAULT_GUIDANCE = 1.5  # measured on digits: 100% class accuracy at the lowest FD (docs/control_results.md)
DEFAULT_TEXT_GUIDANCE = 3.0  # the sweep on emoji (docs/text.md): top-5 93% and group 94% of the sweep prompts


def num_classes(denoiser) -> int:
    """How many classes a denoiser was conditioned on (0: unconditional), from it or its network's config."""
    for owner in (denoiser, getattr(denoiser, "denoiser", None), getattr(denoiser, "net", None)):
        n = getattr(owner, "num_classes", None)
        if n is None:
            n = getattr(getattr(owner, "config", None), "num_classes", None)
        if n is not None:
            return int(n)
    return 0


def text_dim(denoiser) -> int:
    """Width of the text embeddings a denoiser was conditioned on (0: no text), from its network's config."""
    for owner in (denoiser, getattr(denoiser, "denoiser", None), getattr(denoiser, "net", None)):
        d = getattr(getattr(owner, "config", None), "text_dim", None)
        if d is None:
            d = getattr(getattr(getattr(owner, "net", None), "config", None), "text_dim", None)
        if d is not None:
            return int(d)
    return 0


def image_channels(denoiser) -> int:
    """Channels of the image a denoiser was conditioned on (0: none; SR3/Palette concatenation), from its net's config."""
    for owner in (denoiser, getattr(denoiser, "denoiser", None), getattr(denoiser, "net", None)):
        c = getattr(getattr(owner, "config", None), "cond_channels", None)
        if c is None:
            c = getattr(getattr(getattr(owner, "net", None), "config", None), "cond_channels", None)
        if c is not None:
            return int(c)
    return 0


class ClassifierFreeGuidance:
    """D_w = D_uncond + scale * (D_cond - D_uncond), optionally only for sigma in [sigma_lo, sigma_hi].

    A text model needs `uncond`: the TextCond of the null caption "" or of a negative prompt (one row, or
    one per sample)."""

    def __init__(self, denoiser, scale: float = DEFAULT_GUIDANCE, interval: tuple[float, float] | None = None,
                 uncond: TextCond | None = None):
        self.denoiser = as_denoiser(denoiser)
        self.num_classes, self.text = num_classes(denoiser), text_dim(denoiser) > 0
        self.image = image_channels(denoiser) > 0  # "none" is an all-NaN image row (see unmix.nets.unet)
        if self.num_classes == 0 and not self.text and not self.image:
            raise UnmixError("guidance needs a class-conditional model or a text-conditional one; this one was trained "
                             "without labels or text")
        if self.text and not isinstance(uncond, TextCond):
            raise UnmixError("guidance for a text model needs uncond=: the null caption's TextCond "
                             "(encoder.encode([''])) or a negative prompt's")
        self.uncond = uncond
        if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not math.isfinite(scale) or scale < 0:
            raise UnmixError(f"guidance scale must be a finite number >= 0, got guidance={scale!r}")
        self.scale = float(scale)
        lo, hi = interval if interval is not None else (0.0, math.inf)
        if not 0 <= lo < hi:
            raise UnmixError(f"guidance interval must satisfy 0 <= sigma_lo < sigma_hi, got ({lo}, {hi})")
        self.interval = (float(lo), float(hi))
        self.event_shape = getattr(denoiser, "event_shape", None)

    def __call__(self, x: torch.Tensor, sigma, cond=None) -> torch.Tensor:
        if cond is None:
            raise UnmixError("guidance needs a label or a prompt to guide towards (pass cond / --label / --prompt)")
        sigma = sigma_batch(sigma, x)
        lo, hi = self.interval
        active = (sigma >= lo) & (sigma <= hi)
        if self.text:
            if not isinstance(cond, TextCond):
                raise UnmixError("this model is text-conditional: guide it with a prompt (a TextCond), not a label")
            cond, none = cond.expand(x.shape[0]).to(x.device), self.uncond.expand(x.shape[0]).to(x.device)
        elif self.image:
            if not isinstance(cond, torch.Tensor) or cond.ndim != 4:
                raise UnmixError("this model is image-conditional: guide it with an image [N (or 1), C, H, W]")
            cond = cond.to(x.device, x.dtype).expand(x.shape[0], -1, -1, -1)
            active = active & ~torch.isnan(cond).flatten(1).all(1)
            none = torch.full_like(cond, math.nan)
        else:
            cond = torch.as_tensor(cond, device=x.device).long().reshape(-1).expand(x.shape[0])
            bad = (cond < 0) | (cond > self.num_classes)
            if bool(bad.any()):
                raise UnmixError(f"label {int(cond[bad][0])} is outside the model's classes 0..{self.num_classes - 1}")
            active = active & (cond != self.num_classes)
            none = torch.full_like(cond, self.num_classes)
        if self.scale == 1 or not bool(active.any()):
            return self.denoiser(x, sigma, cond)
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), cat_cond([cond, none]))
        d_cond, d_uncond = both.chunk(2)
        guided = d_uncond + self.scale * (d_cond - d_uncond)
        return torch.where(active.reshape(-1, *([1] * (x.ndim - 1))), guided, d_cond)


def steer(denoiser, cond, guidance: float | None = None, interval: tuple[float, float] | None = None,
          uncond: TextCond | None = None):
    """The denoiser to sample with: unchanged without a condition; with labels, guided at `guidance`
    (default DEFAULT_GUIDANCE, so a label alone already gives samples of that class); with prompts (a
    TextCond), guided at `guidance` (default DEFAULT_TEXT_GUIDANCE) away from `uncond`, the null caption's
    or a negative prompt's TextCond."""
    if guidance is not None and num_classes(denoiser) == 0 and text_dim(denoiser) == 0 and not image_channels(denoiser):
        raise UnmixError("--guidance needs a class-conditional model or a text-conditional one; this one was "
                         "trained without labels or text (train with --cond label or --cond text)")
    if cond is None:
        if guidance is not None:
            raise UnmixError("--guidance needs --label: the class to guide towards")
        return as_denoiser(denoiser)
    if guidance is None and image_channels(denoiser):
        return as_denoiser(denoiser)  # an image condition alone: plain conditional sampling, as Palette does
    default = DEFAULT_TEXT_GUIDANCE if isinstance(cond, TextCond) else DEFAULT_GUIDANCE
    return ClassifierFreeGuidance(denoiser, default if guidance is None else guidance, interval, uncond)


def conditioning(denoiser, n: int, label: int | None = None, guidance: float | None = None):
    """(denoiser, cond) for n samples of class `label` (None: unconditional), checked up front for the CLI."""
    if label is not None:
        k = num_classes(denoiser)
        if k == 0:
            raise UnmixError("--label needs a class-conditional model; this one was trained without labels "
                             "(train with --cond label)")
        if not 0 <= label < k:
            raise UnmixError(f"label {label} is outside the model's classes 0..{k - 1}")
    cond = None if label is None else torch.full((n,), label)
    return steer(denoiser, cond, guidance), cond
