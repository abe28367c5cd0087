"""Samplers: plain functions that walk a descending sigma grid (ending at 0) with a denoiser.

Every sampler has the signature

    sample_NAME(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **options) -> x

where x is the starting point at sigmas[0] (noise already scaled by sigmas[0]), `generator` is a
torch.Generator or a list of one generator per sample (stochastic samplers draw each sample's
noise from its own stream), and `callback(step, sigma, x, x0_hat)` sees every denoiser call's input.
All of them integrate the probability-flow ODE  dx/dsigma = (x - D(x, sigma)) / sigma  or its
reverse-time SDE, written in the x = x0 + sigma * eps convention (Karras et al. 2022).

`sample()` is the front door: it picks a grid for the sampler and NFE budget, draws the start
noise, counts denoiser calls and guarantees the budget is respected.
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

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None] | None


def _denoise(denoiser, x, sigma: float, cond, callback, step: int) -> torch.Tensor:
    d = denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device), cond)
    if callback is not None:
        callback(step, sigma, x, d)
    return d


def _levels(sigmas) -> list[float]:
    """The grid as Python floats (float64 coefficients), checked: descending, positive, ending at 0."""
    s = [float(v) for v in torch.as_tensor(sigmas, dtype=torch.float64)]
    if len(s) < 2 or s[-1] != 0.0:
        raise UnmixError("a sigma grid must hold at least one positive level and end at 0")
    if any(v <= 0 for v in s[:-1]) or any(a <= b for a, b in zip(s, s[1:])):
        raise UnmixError("a sigma grid must be strictly decreasing and positive before its final 0")
    return s


def _ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up): the deterministic target and fresh-noise std of one ancestral step.

    sigma_up^2 = eta^2 sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2 is DDPM's posterior variance
    at eta = 1 (and DDIM's sigma_t at other eta), written in the sigma convention.
    """
    if sigma_next == 0:
        return 0.0, 0.0
    up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - up**2), up


# --- first-order and stochastic samplers ----------------------------------------------------------
def sample_euler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """Euler's method on the probability-flow ODE (equals deterministic DDIM on the same grid)."""
    s = _levels(sigmas)
    for i in range(len(s) - 1):
        d = _denoise(denoiser, x, s[i], cond, callback, i)
        x = d + (s[i + 1] / s[i]) * (x - d)
    return x


def sample_ddim(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021): x0_hat plus a sigma_down share of eps_hat plus eta-scaled fresh noise."""
    s = _levels(sigmas)
    for i in range(len(s) - 1):
        d = _denoise(denoiser, x, s[i], cond, callback, i)
        down, up = _ancestral_split(s[i], s[i + 1], eta)
        x = d + (down / s[i]) * (x - d)
        if up > 0:
            x = x + up * rng.randn(x.shape, generator, x.dtype, x.device)
    return x


def sample_ddpm(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DDPM ancestral sampling (Ho et al. 2020): a draw from the Gaussian posterior q(x_next | x, x0_hat).

    Posterior in the sigma convention: mean x0 + (s'^2/s^2)(x - x0), variance s'^2 (s^2 - s'^2) / s^2,
    which is DDPM's "fixed small" variance for any pair of levels (so skipping steps is allowed).
    """
    s = _levels(sigmas)
    for i in range(len(s) - 1):
        d = _denoise(denoiser, x, s[i], cond, callback, i)
        ratio = (s[i + 1] / s[i]) ** 2
        x = d + ratio * (x - d)
        if s[i + 1] > 0:
            std = s[i + 1] * math.sqrt(1 - ratio)
            x = x + std * rng.randn(x.shape, generator, x.dtype, x.device)
    return x


def sample_euler_ancestral(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 1.0):
    """Euler to sigma_down, then fresh noise back up to sigma_next (k-diffusion's ancestral Euler).

    Written out, x + (down - s) (x - x0_hat) / s + up z is DDIM's update, so this is DDIM with eta = 1
    by default (and, at eta = 1, exactly DDPM's posterior step).
    """
    return sample_ddim(denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, eta=eta)


# --- Heun (EDM) -----------------------------------------------------------------------------------
def sample_heun(denoiser, x, sigmas, *, cond=None, generator=None, callback=None,
                churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0):
    """EDM's 2nd-order Heun sampler (Karras et al. 2022, Algorithm 2), with optional churn.

    churn > 0 raises each level in [s_tmin, s_tmax] by gamma = min(churn / steps, sqrt(2) - 1) with
    fresh noise before the step (stochastic). The last step into sigma = 0 is a plain Euler step.
    """
    s = _levels(sigmas)
    n = len(s) - 1
    step = 0
    for i in range(n):
        gamma = min(churn / n, math.sqrt(2) - 1) if s_tmin <= s[i] <= s_tmax else 0.0
        s_hat = s[i] * (1 + gamma)
        if gamma > 0:
            x = x + s_noise * math.sqrt(s_hat**2 - s[i] ** 2) * rng.randn(x.shape, generator, x.dtype, x.device)
        d = (x - _denoise(denoiser, x, s_hat, cond, callback, step)) / s_hat
        step += 1
        x_next = x + (s[i + 1] - s_hat) * d
        if s[i + 1] > 0:
            d2 = (x_next - _denoise(denoiser, x_next, s[i + 1], cond, callback, step)) / s[i + 1]
            step += 1
            x_next = x + (s[i + 1] - s_hat) * (d + d2) / 2
        x = x_next
    return x


# --- exponential-integrator multistep solvers (data prediction) ----------------------------------
def sample_dpmpp_2m(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(2M) (Lu et al. 2022): second-order multistep in lambda = -log sigma, first order at the ends."""
    return _dpmpp_multistep(denoiser, x, sigmas, cond, callback, order=2)


def sample_dpmpp_3m(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """DPM-Solver++(3M): third-order multistep, warming up through orders 1 and 2."""
    return _dpmpp_multistep(denoiser, x, sigmas, cond, callback, order=3)


def _dpmpp_multistep(denoiser, x, sigmas, cond, callback, order: int):
    s = _levels(sigmas)
    n = len(s) - 1
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0_hat), newest first
    for i in range(n):
        d = _denoise(denoiser, x, s[i], cond, callback, i)
        lam = -math.log(s[i])
        hist = [(lam, d)] + hist[: order - 1]
        if s[i + 1] == 0:  # into sigma = 0 the exponential-integrator step is x0_hat itself
            x = d
            continue
        h = -math.log(s[i + 1]) - lam
        phi1 = math.expm1(-h)  # sigma_next / sigma - 1
        x = (s[i + 1] / s[i]) * x - phi1 * d
        # Lower the order on the last steps, where steps are long (stabilises few-step sampling).
        k = min(len(hist), order, n - i)
        if k >= 2:
            r0 = (lam - hist[1][0]) / h
            d1_0 = (d - hist[1][1]) / r0
            if k == 2:
                x = x - 0.5 * phi1 * d1_0
            else:
                r1 = (hist[1][0] - hist[2][0]) / h
                d1_1 = (hist[1][1] - hist[2][1]) / r1
                d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)
                phi2 = phi1 / h + 1
                phi3 = phi2 / h - 0.5
                x = x + phi2 * d1 - phi3 * d2
    return x


# --- UniPC ----------------------------------------------------------------------------------------
def sample_unipc(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 2):
    """UniPC (Zhao et al. 2023), B(h) = expm1(h) ("bh2"), data prediction.

    The predictor UniP-p is a multistep exponential integrator; the corrector UniC-p re-uses the
    denoiser call made at the predicted point (which the next step needs anyway), so it raises the
    order by one at no extra NFE. No corrector after the final step.
    """
    s = _levels(sigmas)
    n = len(s) - 1
    hist: list[tuple[float, torch.Tensor]] = []  # (lambda, x0_hat), newest first
    x_prev, k = None, 0
    for i in range(n):
        d = _denoise(denoiser, x, s[i], cond, callback, i)
        lam = -math.log(s[i])
        if x_prev is not None:  # corrector for the step just taken, using d at its end point
            x = _unipc_update(x_prev, hist, lam, s[i], s[i - 1], d, k)
        hist = [(lam, d)] + hist[: order - 1]
        if s[i + 1] == 0:
            x = d
            continue
        k = min(order, len(hist), n - i)
        x_prev = x
        x = _unipc_update(x, hist, -math.log(s[i + 1]), s[i + 1], s[i], None, k)
    return x


def _unipc_update(x, hist, lam_next, sigma_next, sigma, d_next, k):
    """One UniP (d_next None) or UniC (d_next given) update from hist[0]'s level to lam_next, order k."""
    lam0, m0 = hist[0]
    h = lam_next - lam0
    hh = -h
    h_phi_1 = math.expm1(hh)
    b_h = math.expm1(hh)
    rks, d1s = [], []
    for lam_j, m_j in hist[1:k]:
        rk = (lam_j - lam0) / h
        rks.append(rk)
        d1s.append((m_j - m0) / rk)
    rks.append(1.0)
    # R rows: rks^(i-1); b_i = h_phi_k * i! / B(h)
    p = len(rks)
    R = torch.tensor([[rk ** (j) for rk in rks] for j in range(p)], dtype=torch.float64)
    b = []
    h_phi_k = h_phi_1 / hh - 1
    fact = 1
    for j in range(1, p + 1):
        b.append(h_phi_k * fact / b_h)
        fact *= j + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    b = torch.tensor(b, dtype=torch.float64)
    x_new = (sigma_next / sigma) * x - h_phi_1 * m0
    if d_next is None:  # predictor: order p-1 extrapolation from history
        if p >= 2:
            rhos = [0.5] if p == 2 else torch.linalg.solve(R[:-1, :-1], b[:-1]).tolist()
            x_new = x_new - b_h * sum(r * d for r, d in zip(rhos, d1s))
        return x_new
    rhos = [0.5] if p == 1 else torch.linalg.solve(R, b).tolist()
    corr = sum(r * d for r, d in zip(rhos[:-1], d1s)) if d1s else 0
    return x_new - b_h * (corr + rhos[-1] * (d_next - m0))


# --- iPNDM ----------------------------------------------------------------------------------------
_AB_COEFFS = ([1.0], [1.5, -0.5], [23 / 12, -16 / 12, 5 / 12], [55 / 24, -59 / 24, 37 / 24, -9 / 24])


def sample_ipndm(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 4):
    """Improved PNDM (Zhang & Chen 2023): Adams-Bashforth on dx/dsigma with fixed coefficients,
    warming up through lower orders, one denoiser call per step; the step into sigma = 0 is x0_hat."""
    return _ipndm(denoiser, x, sigmas, cond, callback, order, variable=False)


def sample_ipndm_v(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order: int = 4):
    """iPNDM with variable-step Adams-Bashforth weights: the integral over [s_i, s_{i+1}] of the
    polynomial through the last `order` derivatives at their true sigma levels."""
    return _ipndm(denoiser, x, sigmas, cond, callback, order, variable=True)


def _ipndm(denoiser, x, sigmas, cond, callback, order: int, variable: bool):
    s = _levels(sigmas)
    ds: list[torch.Tensor] = []  # dx/dsigma at s[i], s[i-1], ... (newest first)
    for i in range(len(s) - 1):
        den = _denoise(denoiser, x, s[i], cond, callback, i)
        if s[i + 1] == 0:  # into sigma = 0 the exact step is the posterior mean itself
            return den
        ds = [(x - den) / s[i]] + ds[: order - 1]
        if variable:
            weights = _lagrange_integrals([s[i - j] for j in range(len(ds))], s[i], s[i + 1])
        else:
            weights = [(s[i + 1] - s[i]) * c for c in _AB_COEFFS[len(ds) - 1]]
        x = x + sum(w * d for w, d in zip(weights, ds))
    return x


def _lagrange_integrals(nodes: list[float], a: float, b: float) -> list[float]:
    """Integrals over [a, b] of the Lagrange basis polynomials on `nodes` (exact, via Gauss-Legendre)."""
    k = len(nodes)
    gx, gw = _gauss_legendre(max(1, k))
    out = []
    for j in range(k):
        total = 0.0
        for xi, wi in zip(gx, gw):
            t = a + (b - a) * (xi + 1) / 2
            basis = 1.0
            for m in range(k):
                if m != j:
                    basis *= (t - nodes[m]) / (nodes[j] - nodes[m])
            total += wi * basis
        out.append(total * (b - a) / 2)
    return out


def _gauss_legendre(n: int):
    import numpy as np

    x, w = np.polynomial.legendre.leggauss(n)
    return x.tolist(), w.tolist()


# --- the default: a solver and a grid chosen by budget ----------------------------------------------
AUTO_UNIPC_STEPS = 3


def sample_auto(denoiser, x, sigmas, *, cond=None, generator=None, callback=None):
    """UniPC-2 on grids of up to AUTO_UNIPC_STEPS levels, iPNDM on longer ones (`sample()` picks the grid: at 3
    levels on data of LOW_DIM values or more, by a pilot run on the denoiser, pilot_sigmas).

    On the tuning mixtures (benchmarks/tune_grid.py) UniPC's exponential-integrator steps with their
    free corrector were best at 3 steps, where every step is long, and iPNDM's fourth-order
    Adams-Bashforth on log-linear grids was best from 4 steps on; each walks the grid it is given.
    """
    fn = sample_unipc if len(_levels(sigmas)) - 1 <= AUTO_UNIPC_STEPS else sample_ipndm
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


def list_samplers() -> list[str]:
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
    equals the same seeds run one by one); `seed` is shorthand for torch.Generator().manual_seed(seed).
    `sigmas` overrides the default grid (see default_sigmas; sigma_min / sigma_max override its
    ends, sigma_limits clamps it into a model's range); `x_init` overrides the start noise (already scaled by
    the grid's first level).
    Extra keyword options go to the sampler (eta, churn, order, ...).
    """
    spec = get_sampler(sampler)
    params = inspect.signature(spec.fn).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        valid = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in ("cond", "generator", "callback")]
        unknown = sorted(set(options) - set(valid))
        if unknown:
            took = f"only the options {', '.join(valid)}" if valid else "no options"
            raise UnmixError(f"sampler {sampler!r} takes {took}; got {', '.join(unknown)}")
    shape = tuple(int(v) for v in shape)
    if len(shape) < 2 or any(v <= 0 for v in shape):
        raise UnmixError(f"shape must be [N, ...] with positive sizes, got {list(shape)}")
    event = getattr(denoiser, "event_shape", None)
    if event is not None and tuple(event) != shape[1:]:
        raise UnmixError(f"shape {list(shape[1:])} per sample does not match the denoiser's {list(event)}")
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
    _levels(grid)
    if x_init is None:
        x_init = rng.randn(shape, generator, dtype, device) * float(grid[0])
    counter = CountingDenoiser(as_denoiser(denoiser))
    x = spec.fn(counter, x_init, grid, cond=cond, generator=generator, callback=callback, **options)
    if sigmas is None and counter.nfe > nfe:
        raise AssertionError(f"sampler {sampler} used {counter.nfe} evaluations for a budget of {nfe}")
    return (x, counter.nfe) if return_nfe else x
