"""Samplers: the solvers of unmix.solvers by name, the grids they walk for an NFE budget, and the front door.

`sample()` picks a grid for the sampler and NFE budget (at 3 steps on high-dimensional data by a pilot run on
the denoiser), draws the start noise, counts denoiser calls and guarantees the budget is respected.
"""
from __future__ import annotations

import inspect
import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch

from unmix import rng
from unmix.denoiser import CountingDenoiser, as_denoiser
from unmix.errors import UnmixError
from unmix.schedules import LOW_DIM, append_zero, karras_sigmas, loglinear_sigmas, searched_sigmas
from unmix.solvers import (
    Callback,
    grid_levels,
    sample_ddim,
    sample_ddpm,
    sample_dpmpp_2m,
    sample_dpmpp_3m,
    sample_euler,
    sample_euler_ancestral,
    sample_heun,
    sample_ipndm,
    sample_ipndm_v,
    sample_unipc,
)

# --- the default: a solver and a grid chosen by budget ----------------------------------------------
AUTO_UNIPC_STEPS = 3


def sample_auto(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """UniPC-2 on grids of up to AUTO_UNIPC_STEPS levels, iPNDM on longer ones (`sample()` picks the grid: at 3
    levels on data of LOW_DIM values or more, by a pilot run on the denoiser, pilot_sigmas).

    On the tuning mixtures (benchmarks/tune_grid.py) UniPC's exponential-integrator steps with their
    free corrector were best at 3 steps, where every step is long, and iPNDM's fourth-order
    Adams-Bashforth on log-linear grids was best from 4 steps on; each walks the grid it is given.
    """
    fn = sample_unipc if len(grid_levels(sigmas)) - 1 <= AUTO_UNIPC_STEPS else sample_ipndm
    return fn(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback)


# --- the default at 3 steps on high-dimensional data: a grid chosen by a pilot run ------------------
# With 3 levels the best middle and last levels depend on the data: on the tuning mixtures of
# benchmarks/tune_grid.py the best middle level ranged 0.6-2 and the best last 0.08-0.16, so one fixed
# grid (SEARCHED_LEVELS, 5 / 2 / 0.16) gave away up to half its sliced W2. Choosing the steps by a cheap
# pilot run on the denoiser at hand (the idea of Align Your Steps and GITS, done per denoiser rather than
# once) scored better than the fixed grid on those mixtures (`python benchmarks/tune_grid.py pilot`: mean
# log SW2 + 0.05 TV score 1.42 against 1.59, better on three of four; 256 pilot samples were enough, and a
# k-means mode term added nothing there). With a condition (labels, prompts, an image) the fixed grid stays.
PILOT_LEVELS = (5.0, (0.6, 1.0, 1.5, 2.0, 3.0), (0.02, 0.04, 0.08, 0.16))  # top, middle and last candidates
PILOT_SAMPLES, PILOT_REFERENCE_STEPS, PILOT_SEED = 256, 24, 0
_pilot_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def pilot_sigmas(denoiser, event_shape, sigma_limits: tuple[float, float] | None = None,
                 dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor | None:
    """The 3-level grid `auto` walks for this denoiser: of the PILOT_LEVELS grids (clamped into `sigma_limits`),
    the one whose UniPC samples from PILOT_SAMPLES fixed noises are closest in sliced W2 to a
    PILOT_REFERENCE_STEPS-step iPNDM solve. None when no candidate fits the limits.

    The pilot's noise is its own (seed PILOT_SEED), so the grid does not depend on the caller's seeds or batch,
    and its denoiser calls are not part of the sampling budget: it costs 84 calls on 256 samples, once per
    denoiser (and state of its weights), data shape and range: the result is cached on the denoiser object.
    """
    from unmix.metrics.exact import sliced_w2  # the metrics package is heavy; only the pilot needs it

    lo, hi = sigma_limits if sigma_limits is not None else (0.002, 80.0)
    key, version = (tuple(event_shape), dtype, str(device), lo, hi), _weights_version(denoiser)
    try:
        cache = _pilot_cache.setdefault(denoiser, {})
    except TypeError:  # not weakly referenceable: no cache
        cache = {}
    if key in cache and cache[key][0] == version:
        return cache[key][1]
    clamp = lambda v: min(max(v, lo), hi)  # noqa: E731
    top, middles, lasts = PILOT_LEVELS
    candidates = {(clamp(top), clamp(m), clamp(b)) for m in middles for b in lasts}
    candidates = sorted(c for c in candidates if c[0] > c[1] > c[2])
    best = None
    if candidates:
        den = as_denoiser(denoiser)
        z = rng.randn((PILOT_SAMPLES, *event_shape), torch.Generator().manual_seed(PILOT_SEED), dtype, device)
        ref_grid = loglinear_sigmas(PILOT_REFERENCE_STEPS, max(lo, 0.002), min(hi, 80.0))
        reference = sample_ipndm(den, z * float(ref_grid[0]), ref_grid)
        scores = []
        for levels in candidates:
            grid = append_zero(torch.tensor(levels, dtype=torch.float64))
            scores.append((sliced_w2(sample_unipc(den, z * levels[0], grid), reference), levels))
        best = append_zero(torch.tensor(min(scores)[1], dtype=torch.float64))
    cache[key] = (version, best)
    return best


def _weights_version(denoiser) -> tuple:
    """Changes whenever a network's weights change in place (training, EMA, load_state_dict), so a cached pilot
    grid never outlives the weights it was chosen for."""
    if not isinstance(denoiser, torch.nn.Module):
        return ()
    return tuple(t._version for t in (*denoiser.parameters(), *denoiser.buffers()))


# --- registry and front door ----------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerSpec:
    fn: Callable
    evals_per_step: int  # denoiser calls per step (Heun: 2, except into sigma = 0)
    min_nfe: int
    grid: str  # default grid kind
    rho: float  # Karras grid exponent
    stochastic: bool
    summary: str

    def steps_for(self, nfe: int) -> int:
        return (nfe + 1) // 2 if self.evals_per_step == 2 else nfe


SAMPLERS: dict[str, SamplerSpec] = {
    "ddpm": SamplerSpec(sample_ddpm, 1, 1, "karras", 7.0, True, "DDPM ancestral: exact Gaussian posterior steps"),
    "ddim": SamplerSpec(sample_ddim, 1, 1, "karras", 7.0, False, "DDIM; eta > 0 adds noise (eta=1 is DDPM)"),
    "euler": SamplerSpec(sample_euler, 1, 1, "karras", 7.0, False, "Euler on the probability-flow ODE"),
    "euler_ancestral": SamplerSpec(sample_euler_ancestral, 1, 1, "karras", 7.0, True, "Euler + fresh noise each step"),
    "heun": SamplerSpec(sample_heun, 2, 1, "karras", 7.0, False, "EDM Heun, 2nd order; churn > 0 makes it stochastic"),
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, 1, 1, "karras", 7.0, False, "DPM-Solver++(2M) multistep"),
    "dpmpp_3m": SamplerSpec(sample_dpmpp_3m, 1, 1, "karras", 7.0, False, "DPM-Solver++(3M) multistep"),
    "unipc": SamplerSpec(sample_unipc, 1, 1, "karras", 7.0, False, "UniPC-2 predictor-corrector (bh2)"),
    "ipndm": SamplerSpec(sample_ipndm, 1, 1, "karras", 7.0, False, "iPNDM, 4th-order Adams-Bashforth"),
    "ipndm_v": SamplerSpec(sample_ipndm_v, 1, 1, "karras", 7.0, False, "iPNDM with variable-step weights"),
    "auto": SamplerSpec(sample_auto, 1, 1, "searched", 0.0, False,
                        "the default: UniPC at <= 3 steps (grid by a pilot run), else iPNDM, on searched grids"),
}
DEFAULT_SAMPLER = "auto"
DEFAULT_NFE = 32


def sampling_defaults(own: dict | None, sampler: str | None = None, nfe: int | None = None,
                      default_nfe: int = DEFAULT_NFE) -> tuple[str, int]:
    """(sampler, nfe): the ones asked for, else the model's own (`own`: a distilled model's native grid), else the
    default. The one owner of that decision for the API, the CLI and the web page."""
    own = own or {}
    return (sampler if sampler is not None else own.get("sampler", DEFAULT_SAMPLER),
            nfe if nfe is not None else own.get("nfe", default_nfe))


def list_samplers() -> list[str]:
    """The names `sample(sampler=...)` accepts, as unmix spells them (unmix.sampler_names maps A1111, ComfyUI and
    diffusers names onto these)."""
    return list(SAMPLERS)


def get_sampler(name: str) -> SamplerSpec:
    if name not in SAMPLERS:
        raise UnmixError(f"unknown sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def budget_sigma_range(steps: int) -> tuple[float, float]:
    """(sigma_min, sigma_max) for a grid of `steps` levels: narrower when steps are few.

    With many steps EDM's (0.002, 80) is right. With few, a step spent above sigma ~ 5 or below
    ~0.02 buys little for data of unit scale, so the range shrinks geometrically: (0.02, 5) at
    5 steps, (0.02, 12.6) at 10, (0.011, 80) at 20, (0.002, 80) from 50 on. Chosen by
    benchmarks/tune_grid.py on tuning mixtures that the sampler benchmark does not use.
    """
    t_max = min(max((steps - 5) / 15, 0.0), 1.0)
    t_min = min(max((steps - 10) / 40, 0.0), 1.0)
    return 0.02 * 0.1**t_min, 5.0 * 16.0**t_max


def default_sigmas(sampler: str, nfe: int, sigma_min: float | None = None, sigma_max: float | None = None,
                   dim: int | None = None, sigma_limits: tuple[float, float] | None = None) -> torch.Tensor:
    """The grid `sample()` walks for this sampler and NFE budget (positive levels, then 0).

    "searched" samplers walk schedules.searched_sigmas (which may use `dim`, the values per sample);
    the others a Karras grid (rho = 7) whose unset ends come from budget_sigma_range. `sigma_limits` (a
    trained model's noise range) clamps the budget grid's ends into it rather than stretching the grid onto it:
    stretching a few-step grid onto (0.002, 80) cost a trained digits model FD 68 against 25 at NFE 3.
    """
    if sigma_limits is not None and sigma_min is None and sigma_max is None:
        lo, hi = sigma_limits
        budget = default_sigmas(sampler, nfe, dim=dim)
        top, bottom = float(budget[0]), float(budget[-2])
        if lo <= bottom and top <= hi:
            return budget
        return default_sigmas(sampler, nfe, min(max(bottom, lo), hi), max(min(top, hi), lo), dim)
    spec = get_sampler(sampler)
    if not isinstance(nfe, int) or nfe < spec.min_nfe:
        raise UnmixError(f"sampler {sampler!r} needs nfe >= {spec.min_nfe}, got {nfe}")
    steps = spec.steps_for(nfe)
    if spec.grid == "searched":
        for v in (sigma_min, sigma_max):
            if v is not None and v <= 0:
                raise UnmixError(f"sigma_min and sigma_max must be > 0, got {sigma_min}, {sigma_max}")
        if sigma_min is not None and sigma_max is not None and sigma_min > sigma_max:
            sigma_min = sigma_max
        return searched_sigmas(steps, sigma_min, sigma_max, dim)
    auto_min, auto_max = budget_sigma_range(steps)
    sigma_min = auto_min if sigma_min is None else sigma_min
    sigma_max = auto_max if sigma_max is None else sigma_max
    if sigma_min <= 0 or sigma_max <= 0:
        raise UnmixError(f"sigma_min and sigma_max must be > 0, got {sigma_min}, {sigma_max}")
    sigma_min = min(sigma_min, sigma_max)
    if spec.grid == "loglinear":
        return loglinear_sigmas(steps, sigma_min, sigma_max)
    return karras_sigmas(steps, sigma_min, sigma_max, spec.rho)


def sample(
    denoiser,
    shape,
    sampler: str = DEFAULT_SAMPLER,
    nfe: int = 10,
    *,
    generator: rng.Generators = None,
    seed: int | None = None,
    cond: torch.Tensor | None = None,
    callback: Callback = None,
    sigmas: torch.Tensor | None = None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    sigma_limits: tuple[float, float] | None = None,
    x_init: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    return_nfe: bool = False,
    **options,
):
    """Draw samples at sigma = 0 with at most `nfe` denoiser calls.

    `generator` may be one torch.Generator for the batch or a list of one per sample (then a batch
    equals the same seeds run one by one, to the rounding of batched matmuls); `seed` is shorthand for
    torch.Generator().manual_seed(seed).
    `sigmas` overrides the default grid (see default_sigmas; sigma_min / sigma_max override its
    ends, sigma_limits clamps it into a model's range); `x_init` overrides the start noise (already scaled by
    the grid's first level).
    Extra keyword options go to the sampler (eta, churn, order, ...).
    """
    spec = get_sampler(sampler)
    _check_options(sampler, spec.fn, options)
    shape = _check_shape(shape, denoiser)
    if seed is not None:
        if generator is not None:
            raise UnmixError("pass either seed or generator, not both")
        generator = torch.Generator().manual_seed(seed)
    dim = math.prod(shape[1:])
    grid = None
    if sigmas is not None:
        grid = torch.as_tensor(sigmas)
    elif sampler == "auto" and nfe == 3 and dim >= LOW_DIM and cond is None and sigma_min is None \
            and sigma_max is None:
        grid = pilot_sigmas(denoiser, shape[1:], sigma_limits, dtype, device)
    if grid is None:
        grid = default_sigmas(sampler, nfe, sigma_min, sigma_max, dim, sigma_limits)
    grid_levels(grid)
    if x_init is None:
        x_init = rng.randn(shape, generator, dtype, device) * float(grid[0])
    counter = CountingDenoiser(as_denoiser(denoiser))
    x = spec.fn(counter, x_init, grid, cond=cond, generator=generator, callback=callback, **options)
    if sigmas is None and counter.nfe > nfe:
        raise AssertionError(f"sampler {sampler} used {counter.nfe} evaluations for a budget of {nfe}")
    return (x, counter.nfe) if return_nfe else x


def _check_options(sampler: str, fn, options: dict) -> None:
    """Refuse keyword options the sampler function does not take (one that takes **kwargs takes any)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in ("cond", "generator", "callback")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        took = f"only the options {', '.join(valid)}" if valid else "no options"
        raise UnmixError(f"sampler {sampler!r} takes {took}; got {', '.join(unknown)}")


def _check_shape(shape, denoiser) -> tuple[int, ...]:
    """The batch shape as ints: [N, ...] with positive sizes, per sample the denoiser's event_shape when it has one."""
    shape = tuple(int(v) for v in shape)
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise UnmixError(f"shape must be [N, ...] with positive sizes, got {list(shape)}")
    event = getattr(denoiser, "event_shape", None)
    if event is not None and tuple(event) != shape[1:]:
        raise UnmixError(f"shape {list(shape[1:])} per sample does not match the denoiser's {list(event)}")
    return shape
