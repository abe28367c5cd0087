"""The solvers: plain functions that walk a descending sigma grid (ending at 0) with a denoiser.

Every solver has the signature

    sample_NAME(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, **options) -> x

where x is the starting point at sigmas[0] (noise already scaled by sigmas[0]), `generator` is a
torch.Generator or a list of one generator per sample (stochastic samplers draw each sample's
noise from its own stream), and `callback(step, sigma, x, x0_hat)` sees every denoiser call's input.
All of them integrate the probability-flow ODE  dx/dsigma = (x - D(x, sigma)) / sigma  or its
reverse-time SDE, written in the x = x0 + sigma * eps convention (Karras et al. 2022).
unmix.samplers names them, picks their grids and is the front door (`sample()`).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from unmix import rng
from unmix.errors import UnmixError

Callback = Callable[[int, float, torch.Tensor, torch.Tensor], None] | None


def _denoise(denoiser, x, sigma: float, cond, callback, step: int) -> torch.Tensor:
    d = denoiser(x, torch.full((x.shape[0],), sigma, dtype=x.dtype, device=x.device), cond)
    if callback is not None:
        callback(step, sigma, x, d)
    return d


def grid_levels(sigmas) -> list[float]:
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
    s = grid_levels(sigmas)
    for i in range(len(s) - 1):
        d = _denoise(denoiser, x, s[i], cond, callback, i)
        x = d + (s[i + 1] / s[i]) * (x - d)
    return x


def sample_ddim(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta: float = 0.0):
    """DDIM (Song et al. 2021): x0_hat plus a sigma_down share of eps_hat plus eta-scaled fresh noise."""
    s = grid_levels(sigmas)
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
    s = grid_levels(sigmas)
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
    s = grid_levels(sigmas)
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
    s = grid_levels(sigmas)
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
    s = grid_levels(sigmas)
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
    s = grid_levels(sigmas)
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
