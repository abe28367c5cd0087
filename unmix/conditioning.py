"""Conditioning values that are more than a label tensor: text embeddings from a frozen encoder.

A denoiser's `cond` is None (no condition), an integer label tensor [N], or a `TextCond`: the token
embeddings, their padding mask and a pooled sentence vector of N prompts, as a frozen text encoder gives
them (Imagen, Saharia et al. 2022; Stable Diffusion's cross-attention, Rombach et al. 2022). A text model
attends to `tokens` where `mask` is True and adds a projection of `pooled` to its noise embedding.

"No condition" for a text model is the empty caption's embedding, `encoder.encode([""])`, exactly what
classifier-free training drops captions to; a negative prompt is simply another prompt's embedding used
in that place. This module knows nothing about encoders (it imports only torch): it gives guidance and
batching the operations they need on any cond value, so code that slices, doubles or moves a batch
works the same for labels and for text:

    cond[i:j], cond[idx], len(cond)        rows (a TextCond row index keeps the batch dimension)
    cat([cond, uncond])                    a doubled batch for classifier-free guidance
    expand(cond, n)                        one prompt (or one label) for n samples
    to(cond, device)                       None, tensors and TextCond alike
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

NULL_CAPTION = ""  # the caption a dropped or missing caption becomes; its embedding is "no condition"


@dataclass(frozen=True)
class TextCond:
    """N encoded prompts: tokens [N, T, D] float, mask [N, T] bool (True = a real token; every row has at
    least one, as an encoder's [CLS]/[SEP] guarantee), pooled [N, D] float. Rows are padded to a common T
    with zero tokens and mask False, so padding never changes what a row means."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def __post_init__(self):
        n, t, d = self.tokens.shape if self.tokens.ndim == 3 else (None, None, None)
        if n is None or tuple(self.mask.shape) != (n, t) or tuple(self.pooled.shape) != (n, d):
            raise ValueError(f"TextCond needs tokens [N, T, D], mask [N, T] and pooled [N, D]; got "
                             f"{list(self.tokens.shape)}, {list(self.mask.shape)}, {list(self.pooled.shape)}")
        if self.mask.dtype != torch.bool:
            object.__setattr__(self, "mask", self.mask.bool())

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, idx) -> TextCond:
        """Rows, like a tensor's first dimension; an int keeps the batch dimension (one row)."""
        if isinstance(idx, int):
            idx = slice(idx, idx + 1) if idx != -1 else slice(-1, None)
        return TextCond(self.tokens[idx], self.mask[idx], self.pooled[idx])

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    @property
    def dim(self) -> int:
        return self.tokens.shape[2]

    def to(self, device=None, dtype: torch.dtype | None = None) -> TextCond:
        """Moved to a device and/or cast to a float dtype (the mask stays bool)."""
        return TextCond(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))

    def pad(self, length: int) -> TextCond:
        """The same rows with T padded to `length` (>= the current T) with masked-out zero tokens."""
        extra = length - self.tokens.shape[1]
        if extra < 0:
            raise ValueError(f"cannot pad {self.tokens.shape[1]} tokens down to {length}")
        if extra == 0:
            return self
        return TextCond(F.pad(self.tokens, (0, 0, 0, extra)), F.pad(self.mask, (0, extra)), self.pooled)

    def expand(self, n: int) -> TextCond:
        """n rows: unchanged if there are n already; one row is repeated (a view, no copy)."""
        if len(self) == n:
            return self
        if len(self) != 1:
            raise ValueError(f"cannot expand {len(self)} prompts to a batch of {n}")
        return TextCond(self.tokens.expand(n, -1, -1), self.mask.expand(n, -1), self.pooled.expand(n, -1))

    @staticmethod
    def cat(conds: Sequence[TextCond]) -> TextCond:
        """Rows of several TextConds stacked, padded to the longest T."""
        length = max(c.tokens.shape[1] for c in conds)
        padded = [c.pad(length) for c in conds]
        return TextCond(torch.cat([c.tokens for c in padded]), torch.cat([c.mask for c in padded]),
                        torch.cat([c.pooled for c in padded]))


Cond = torch.Tensor | TextCond | None


def cat(conds: Sequence[Cond]) -> Cond:
    """Batches of one kind stacked along rows (the doubled batch of classifier-free guidance)."""
    if all(c is None for c in conds):
        return None
    if all(isinstance(c, TextCond) for c in conds):
        return TextCond.cat(conds)
    if all(isinstance(c, torch.Tensor) for c in conds):
        return torch.cat([c.reshape(-1) if c.ndim == 0 else c for c in conds])
    raise ValueError(f"cannot concatenate conditions of different kinds: {[type(c).__name__ for c in conds]}")


def expand(cond: Cond, n: int) -> Cond:
    """A condition for n rows: one label or one prompt is repeated; n rows are returned unchanged."""
    if cond is None or isinstance(cond, TextCond):
        return None if cond is None else cond.expand(n)
    return cond.reshape(-1).expand(n) if cond.numel() == 1 else cond


def to(cond: Cond, device) -> Cond:
    """The condition on `device` (None stays None)."""
    return None if cond is None else cond.to(device)


__all__ = ["NULL_CAPTION", "Cond", "TextCond", "cat", "expand", "to"]
