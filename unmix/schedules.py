"""Noise schedules, all expressed as noise levels sigma in the x = x0 + sigma * eps convention.

A variance-preserving (VP) schedule with cumulative product alpha_bar(t) is the sigma table
sigma(t) = sqrt((1 - alpha_bar(t)) / alpha_bar(t)); the VP sample is x / sqrt(1 + sigma^2).
Everything is computed in float64 so that tables and grids are exact enough to compare against
closed forms and against other libraries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from unmix.errors import UnmixError

F64 = torch.float64


def linear_betas(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM (Ho et al. 2020) linear betas."""
    return torch.linspace(beta_start, beta_end, num_steps, dtype=F64)


def cosine_betas(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved-DDPM (Nichol & Dhariwal 2021) cosine schedule, betas clipped at max_beta."""
    t = torch.arange(num_steps + 1, dtype=F64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


def sigmas_from_alpha_bar(alpha_bar: torch.Tensor) -> torch.Tensor:
    return ((1 - alpha_bar) / alpha_bar).sqrt()


def alpha_bar_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + sigmas.to(F64) ** 2)


@dataclass(frozen=True)
class DiscreteSchedule:
    """A discrete-time VP schedule (DDPM linear, cosine, or any betas) seen as a table of sigmas.

    Index t = 0 is the least noisy level. Maps between a (possibly fractional) timestep and sigma
    interpolate log-sigma linearly between table entries.
    """

    betas: torch.Tensor
    name: str = "custom"

    @classmethod
    def linear(cls, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiscreteSchedule":
        return cls(linear_betas(num_steps, beta_start, beta_end), "linear")

    @classmethod
    def cosine(cls, num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "DiscreteSchedule":
        return cls(cosine_betas(num_steps, s, max_beta), "cosine")

    @classmethod
    def by_name(cls, name: str, num_steps: int = 1000) -> "DiscreteSchedule":
        makers = {"linear": cls.linear, "cosine": cls.cosine}
        if name not in makers:
            raise UnmixError(f"unknown schedule {name!r}; valid: {', '.join(makers)}")
        return makers[name](num_steps)

    @property
    def num_steps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1 - self.betas.to(F64), 0)

    @property
    def sigmas(self) -> torch.Tensor:
        return sigmas_from_alpha_bar(self.alphas_cumprod)

    @property
    def sigma_min(self) -> float:
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        return float(self.sigmas[-1])

    def t_to_sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        """Sigma at a timestep; fractional timesteps interpolate log-sigma between table entries."""
        t = torch.as_tensor(t, dtype=F64)
        if torch.any(t < 0) or torch.any(t > self.num_steps - 1):
            raise UnmixError(f"timestep out of range [0, {self.num_steps - 1}]")
        log_sigmas = self.sigmas.log()
        lo = t.floor().long().clamp(max=self.num_steps - 2)
        w = t - lo
        return ((1 - w) * log_sigmas[lo] + w * log_sigmas[lo + 1]).exp()

    def sigma_to_t(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """The fractional timestep whose interpolated sigma equals `sigma` (clamped to the table's range)."""
        sigma = torch.as_tensor(sigma, dtype=F64)
        log_sigmas = self.sigmas.log()
        log_s = sigma.clamp(min=self.sigma_min, max=self.sigma_max).log()
        hi = torch.searchsorted(log_sigmas, log_s.reshape(-1)).clamp(1, self.num_steps - 1).reshape(log_s.shape)
        lo = hi - 1
        w = (log_s - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])
        return lo.to(F64) + w

    def timestep_grid(self, n: int, spacing: str = "trailing") -> torch.Tensor:
        """n descending integer timesteps as diffusers spaces them ('leading', 'trailing' or 'linspace')."""
        T = self.num_steps
        if spacing == "leading":
            ts = torch.arange(0, n, dtype=torch.long) * (T // n)
            return ts.flip(0)
        if spacing == "trailing":
            return torch.round(torch.arange(T, 0, -T / n, dtype=F64)).long() - 1
        if spacing == "linspace":
            return torch.linspace(0, T - 1, n, dtype=F64).round().long().flip(0)
        raise UnmixError(f"unknown timestep spacing {spacing!r}; valid: leading, trailing, linspace")


def append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas.to(F64), sigmas.new_zeros(1, dtype=F64)])


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM (Karras et al. 2022) grid: n levels from sigma_max to sigma_min, uniform in sigma^(1/rho), then 0."""
    _check_grid_args(n, sigma_min, sigma_max)
    if n == 1:
        return append_zero(torch.tensor([sigma_max], dtype=F64))
    ramp = torch.linspace(0, 1, n, dtype=F64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return append_zero((hi + ramp * (lo - hi)) ** rho)


def loglinear_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0) -> torch.Tensor:
    """n levels uniform in log sigma (uniform in log-SNR, DPM-Solver's choice), then 0."""
    _check_grid_args(n, sigma_min, sigma_max)
    if n == 1:
        return append_zero(torch.tensor([sigma_max], dtype=F64))
    return append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=F64).exp())


def discrete_sigmas(schedule: DiscreteSchedule, n: int, spacing: str = "leading") -> torch.Tensor:
    """The sigmas of n DDPM/DDIM timesteps (diffusers spacing), then 0."""
    if n < 1 or n > schedule.num_steps:
        raise UnmixError(f"number of steps must be in [1, {schedule.num_steps}], got {n}")
    return append_zero(schedule.sigmas[schedule.timestep_grid(n, spacing)])


# --- few-step grids searched on tuning mixtures ----------------------------------------------------
# With a handful of steps the grid matters more than the solver. The default grid was searched, as
# GITS (Chen et al. 2024) and Align Your Steps (Sabour et al. 2024) do, scoring sliced W2 and
# mode-weight error on mixtures that benchmarks/samplers.py does not use (2-D, 32-D, and 64-D ones
# fitted to synthetic glyphs, to photo patches, and drawn at random): benchmarks/tune_grid.py. From
# 4 levels on, log-linear grids (uniform in log-SNR) over a range that depends on the budget and the
# data's dimension did as well as free-form searched levels; at 3 levels the levels themselves were
# searched, by coordinate descent and then a full grid over (sigma_0, sigma_1, sigma_2). The default sampler
# now picks its 3-level grid by a pilot run on the denoiser (samplers.pilot_sigmas) from 16 values per sample on;
# these levels remain its grid with a condition, with explicit ends, and for whoever asks for them.
LOW_DIM = 16  # values per sample below which data count as low-dimensional
SEARCHED_LEVELS: dict[int, tuple[float, ...]] = {3: (5.0, 2.0, 0.16)}  # 64-D tuning mixtures
# In D dimensions modes are told apart at sigma ~ their distance, which grows like sqrt(D): on 2-D
# data the middle level sits lower.
SEARCHED_LEVELS_LOW_DIM: dict[int, tuple[float, ...]] = {3: (5.0, 0.62, 0.164)}


def few_step_range(steps: int, dim: int | None = None) -> tuple[float, float]:
    """(sigma_min, sigma_max) of the log-linear grid used where no searched levels exist.

    At 10 steps the tuning optimum was (0.06, 28) on 64-D mixtures and sigma_min = 0.02 on 2-D ones
    (the final call denoises: on low-dimensional data with small modes it must come later). sigma_min
    shrinks as 1/steps (down to EDM's 0.002) and sigma_max grows to EDM's 80 from about 20 steps on.
    On 2-D data with 4-5 steps a step above sigma ~ 5 is wasted (the data's scale is ~1, not ~sqrt(D)),
    so there sigma_max rises geometrically from 5 at 5 steps to 28 at 10. Callers that do not pass
    `dim` (inpainting and editing, whose settings were tuned on the earlier grids) get this low range,
    which is close to the earlier default.
    """
    low = dim is None or dim < LOW_DIM  # unknown dimension (inpaint / edit): the earlier, lower range
    sigma_min = max(0.002, (0.02 if low else 0.06) * 10 / steps)
    sigma_max = min(80.0, 28.0 * max(1.0, steps / 10) ** 1.5)
    if low and steps < 10:
        sigma_max = 5.0 * (28.0 / 5.0) ** (max(0, steps - 5) / 5)
    return sigma_min, sigma_max


def searched_sigmas(steps: int, sigma_min: float | None = None, sigma_max: float | None = None,
                    dim: int | None = None) -> torch.Tensor:
    """The few-step default grid: SEARCHED_LEVELS where one exists, else log-linear over few_step_range.

    `dim` (values per sample, if known) picks the low-dimensional levels and range below LOW_DIM.
    Explicit ends (a trained model's sigma range) map the grid affinely in log sigma onto them, which
    keeps its shape; an end left as None stays where the grid put it.
    """
    if steps < 1:
        raise UnmixError(f"a sigma grid needs at least 1 level, got {steps}")
    table = SEARCHED_LEVELS_LOW_DIM if dim is not None and dim < LOW_DIM and steps in SEARCHED_LEVELS_LOW_DIM \
        else SEARCHED_LEVELS
    if steps in table:
        levels = torch.tensor(table[steps], dtype=F64)
    else:
        lo, hi = few_step_range(steps, dim)
        levels = loglinear_sigmas(steps, lo, hi)[:-1]
    lo, hi = float(levels[-1]), float(levels[0])
    new_lo = lo if sigma_min is None else sigma_min
    new_hi = hi if sigma_max is None else sigma_max
    if sigma_min is None or sigma_max is None:  # one end moved past the other: meet it
        new_lo = min(new_lo, new_hi)
    _check_grid_args(steps, new_lo, new_hi)
    if steps == 1:
        return append_zero(torch.tensor([new_hi], dtype=F64))
    if new_hi == new_lo:
        raise UnmixError(f"a grid of {steps} levels needs sigma_min < sigma_max, got {new_lo} for both")
    t = (levels.log() - math.log(lo)) / (math.log(hi) - math.log(lo))  # 0 at the bottom, 1 at the top
    return append_zero((math.log(new_lo) + t * (math.log(new_hi) - math.log(new_lo))).exp())


GRIDS = ("karras", "loglinear")


def sigma_grid(kind: str, n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """A descending grid of n positive sigmas followed by 0, by name."""
    if kind == "karras":
        return karras_sigmas(n, sigma_min, sigma_max, rho)
    if kind == "loglinear":
        return loglinear_sigmas(n, sigma_min, sigma_max)
    raise UnmixError(f"unknown sigma grid {kind!r}; valid: {', '.join(GRIDS)}")


def _check_grid_args(n: int, sigma_min: float, sigma_max: float) -> None:
    if n < 1:
        raise UnmixError(f"a sigma grid needs at least 1 level, got {n}")
    if not (0 < sigma_min <= sigma_max):
        raise UnmixError(f"need 0 < sigma_min <= sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
