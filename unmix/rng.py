"""Explicit randomness: every draw takes a torch.Generator, or one generator per sample.

With one generator per sample, a batch of N draws exactly the noise of N single runs with the same seeds,
because each sample's noise comes from its own stream; the samples then agree to rounding (a BLAS matmul's
summation order depends on the number of rows).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def generators_from_seeds(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def randn(shape: Sequence[int], generator: Generators = None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal noise of `shape`; a list of generators draws row i from generator i (on CPU, for reproducibility)."""
    shape = tuple(shape)
    if isinstance(generator, Sequence) and not isinstance(generator, torch.Generator):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        rows = [torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generator]
        return torch.stack(rows).to(device)
    if generator is not None and device is not None and generator.device != torch.device(device):
        return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)
