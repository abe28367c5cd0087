"""Training recipes: how to draw noise levels and weight the loss, stored as data in the checkpoint.

Every recipe regresses the network output F onto the target that makes the denoiser exact,
target = (x0 - c_skip x) / c_out, so the x0-space error is c_out^2 |F - target|^2. Each recipe's
own weighting makes the output-space loss a plain mean square:

    edm   sigma ~ exp(N(p_mean, p_std^2)), lambda = 1/c_out^2 (Karras et al. 2022, table 1)
    ddpm  t ~ U{0..T-1}, eps-MSE (Ho et al. 2020): output-space weight 1
    v     t ~ U{0..T-1}, v-MSE (Salimans & Ho 2022): output-space weight 1

min-SNR-gamma (Hang et al. 2023) replaces the x0-space weight by min(SNR, gamma) with SNR = 1/sigma^2,
i.e. output-space weight min(SNR, gamma) * c_out^2 (for eps: min(SNR, gamma) / SNR).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from unmix.denoiser import PARAMETERIZATIONS, NetworkDenoiser, expand_like
from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule

RECIPES = ("edm", "ddpm", "v")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Recipe:
    name: str = "edm"
    parameterization: str = "edm"
    sigma_data: float = 0.5
    p_mean: float = -1.2  # edm: mean of ln(sigma)
    p_std: float = 1.2  # edm: std of ln(sigma)
    schedule: str | None = None  # ddpm / v: "linear" or "cosine"
    num_steps: int = 1000  # ddpm / v: timesteps in the schedule
    min_snr_gamma: float = 0.0  # > 0 turns on min-SNR-gamma weighting
    sigma_min: float = 0.002  # sampling range (continuous recipes)
    sigma_max: float = 80.0

    def __post_init__(self):
        """Check every field (a recipe also comes from a hand-edited config.json), so that a bad value is one sentence
        here rather than a NaN loss or a TypeError later."""
        if self.name not in RECIPES:
            raise UnmixError(f"unknown recipe {self.name!r}; valid: {', '.join(RECIPES)}")
        if self.parameterization not in PARAMETERIZATIONS:
            raise UnmixError(f"the recipe's parameterization= must be one of {', '.join(PARAMETERIZATIONS)}, "
                             f"got {self.parameterization!r}")
        for key, low, strict in (("sigma_data", 0, True), ("p_mean", -math.inf, False), ("p_std", 0, True),
                                 ("min_snr_gamma", 0, False), ("sigma_min", 0, True), ("sigma_max", 0, True)):
            value = getattr(self, key)
            if not (_is_number(value) and math.isfinite(value) and (value > low if strict else value >= low)):
                bound = "" if low == -math.inf else f" {'>' if strict else '>='} {low}"
                raise UnmixError(f"the recipe's {key}= must be a finite number{bound}, got {value!r}")
        if self.sigma_min >= self.sigma_max:
            raise UnmixError(f"the recipe's sigma_min= ({self.sigma_min}) must be below its sigma_max= ({self.sigma_max})")
        if not isinstance(self.num_steps, int) or isinstance(self.num_steps, bool) or self.num_steps < 2:
            raise UnmixError(f"the recipe's num_steps= must be an integer >= 2, got {self.num_steps!r}")
        if self.schedule is not None and not isinstance(self.schedule, str):
            raise UnmixError(f"the recipe's schedule= must be a schedule name or None, got {self.schedule!r}")
        self._schedule = DiscreteSchedule.by_name(self.schedule, self.num_steps) if self.schedule else None

    @classmethod
    def from_name(cls, name: str, **overrides) -> "Recipe":
        presets = {
            "edm": dict(parameterization="edm"),
            "ddpm": dict(parameterization="eps", schedule="linear"),
            "v": dict(parameterization="v", schedule="cosine"),
        }
        if name not in presets:
            raise UnmixError(f"unknown recipe {name!r}; valid: {', '.join(RECIPES)}")
        return cls(name=name, **{**presets[name], **overrides})

    @classmethod
    def from_dict(cls, d: dict) -> "Recipe":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def discrete(self) -> DiscreteSchedule | None:
        return self._schedule

    @property
    def noise_scale(self) -> float:
        """Multiplier a net applies to c_noise: ln(sigma)/4 spans ~2.7, a timestep spans T; bring both to ~10^3."""
        return 1.0 if self._schedule else 250.0

    def sigma_range(self) -> tuple[float, float]:
        """(sigma_min, sigma_max) a sampler should walk for a model trained with this recipe.

        Discrete schedules are cut at sigma_max: the cosine table reaches 2e4, where the image is
        already indistinguishable from noise and sampler steps would be wasted."""
        if self._schedule:
            return self._schedule.sigma_min, min(self._schedule.sigma_max, self.sigma_max)
        return self.sigma_min, self.sigma_max

    def denoiser(self, net: nn.Module) -> NetworkDenoiser:
        return NetworkDenoiser(net, self.parameterization, self.sigma_data, self._schedule)

    def sample_sigma(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n training noise levels (float32, CPU) from this recipe's distribution."""
        if self._schedule:
            t = torch.randint(0, self._schedule.num_steps, (n,), generator=generator)
            return self._schedule.sigmas[t].float()
        return (self.p_mean + self.p_std * torch.randn(n, generator=generator)).exp()

    def quantile(self, sigma: torch.Tensor) -> torch.Tensor:
        """Where each sigma falls in the training distribution (its CDF, in [0, 1]); used to log loss by quartile."""
        if self._schedule:
            return self._schedule.sigma_to_t(sigma.double().cpu()).float() / (self._schedule.num_steps - 1)
        z = (sigma.double().cpu().log() - self.p_mean) / (self.p_std * math.sqrt(2))
        return (0.5 * (1 + torch.erf(z))).float()

    def loss(self, denoiser: NetworkDenoiser, x0: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor,
             cond: torch.Tensor | None = None, exclude: torch.Tensor | None = None) -> torch.Tensor:
        """Per-sample weighted loss [N] at the given noise levels and noise (`exclude`: items a neighbours net leaves
        out of its guess, see unmix.nets.neighbours)."""
        sigma = sigma.to(x0.device, x0.dtype)
        x = x0 + expand_like(sigma, x0) * noise
        c_skip, c_out, c_in, c_noise = (expand_like(c, x0) if i < 3 else c for i, c in enumerate(denoiser.precond(sigma)))
        out = denoiser.network(x, sigma, c_in, c_noise, cond, exclude).float()
        target = (x0 - c_skip * x) / c_out
        err = (out - target).pow(2).flatten(1).mean(1)
        if self.min_snr_gamma > 0:
            snr = sigma.float().pow(-2)
            err = err * snr.clamp(max=self.min_snr_gamma) * c_out.reshape(-1).float().pow(2)
        return err
