"""One in-memory dataset: items as one tensor, optional labels and captions."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Dataset:
    """Items as one tensor: uint8 [N, C, H, W] images (0..255) or float [N, ...] already in [-1, 1].

    `labels` [N] index `class_names` (None when unlabelled); `info` holds per-item metadata such as
    each emoji's Unicode name and group. `captions` (None when the data has no text) gives item i's caption
    variants as `captions[i]`, a list of strings: the first is the item's main caption, the others are fixed
    augmentations (keywords, combinations), and an empty list means no caption (the null caption).
    """

    name: str
    data: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    captions: list[list[str]] | None = None

    def __len__(self) -> int:
        return self.data.shape[0]

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one item: (C, H, W) for images, (D,) for points."""
        return tuple(self.data.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.data.ndim == 4

    @property
    def num_classes(self) -> int:
        return len(self.class_names) if self.labels is not None else 0

    def to(self, device) -> "Dataset":
        labels = None if self.labels is None else self.labels.to(device)
        return Dataset(self.name, self.data.to(device), labels, self.class_names, self.info, self.captions)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(x in [-1, 1] as float32, labels or None) for the given item indices."""
        x = self.data[idx]
        x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
        return x, None if self.labels is None else self.labels[idx]

    def describe(self) -> dict:
        """What a checkpoint records about its training data."""
        return {"name": self.name, "shape": list(self.shape), "size": len(self), "class_names": self.class_names}
