"""The forward (noising) process, x_sigma = x0 + sigma * eps, and its DDPM (variance-preserving) form.

`trajectory` simulates the process as it really runs, a Brownian path: each frame adds fresh,
independent noise of variance sigma_k^2 - sigma_{k-1}^2 to the previous one, so every frame has the
marginal N(x0, sigma_k^2 I) and frames are correlated like diffusing ink (Cov = min(sigma_j, sigma_k)^2).
"""
from __future__ import annotations

import torch

from unmix import rng
from unmix.denoiser import expand_like, sigma_batch
from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule


def add_noise(x0: torch.Tensor, sigma: torch.Tensor | float, noise: torch.Tensor) -> torch.Tensor:
    """x0 + sigma * noise, with sigma a scalar or one level per sample."""
    return x0 + expand_like(sigma_batch(sigma, x0), x0) * noise


def add_noise_ddpm(x0: torch.Tensor, t: torch.Tensor | int, schedule: DiscreteSchedule, noise: torch.Tensor) -> torch.Tensor:
    """The DDPM sample sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise at integer timestep(s) t.

    Equals add_noise(x0, sigma_t, noise) / sqrt(1 + sigma_t^2): the same point seen in VP scaling.
    """
    t = torch.as_tensor(t, dtype=torch.long).reshape(-1).expand(x0.shape[0])
    if torch.any(t < 0) or torch.any(t >= schedule.num_steps):
        raise UnmixError(f"timestep out of range [0, {schedule.num_steps - 1}]")
    ab = schedule.alphas_cumprod[t].to(x0.device, x0.dtype)
    return expand_like(ab.sqrt(), x0) * x0 + expand_like((1 - ab).sqrt(), x0) * noise


def trajectory(x0: torch.Tensor, sigmas, generator: rng.Generators = None) -> torch.Tensor:
    """Frames [len(sigmas), *x0.shape] of one forward path through increasing noise levels (0 allowed first)."""
    s = torch.as_tensor(sigmas, dtype=torch.float64)
    if s.ndim != 1 or len(s) == 0 or torch.any(s < 0) or torch.any(s[1:] < s[:-1]):
        raise UnmixError("trajectory sigmas must be a non-empty, non-decreasing list of levels >= 0")
    frames, x, prev = [], x0, 0.0
    for level in s.tolist():
        step = (level**2 - prev**2) ** 0.5
        if step > 0:
            x = x + step * rng.randn(x0.shape, generator, x0.dtype, x0.device)
        frames.append(x)
        prev = level
    return torch.stack(frames)


def vp_view(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """x_sigma / sqrt(1 + sigma^2): the variance-preserving view, which stays in range for display."""
    return x / expand_like((1 + sigma_batch(sigma, x) ** 2).sqrt(), x)
