"""Likelihoods of data under a denoiser, in bits per dimension.

Two routes, both written in the x = x0 + sigma * eps convention:

**The variational bound (VLB)** of a discrete-time model (Ho et al. 2020, eq. 5): prior KL at the last
step + one KL per step + DDPM's discretised Gaussian decoder at the first step. With the "small"
(posterior) variance each step's KL is 0.5 (SNR_{t-1} - SNR_t) |x0 - D(x_t)|^2, SNR = 1 / sigma^2
(Kingma et al. 2021); "large" uses beta_t as DDPM's other fixed choice. The decoder bins each value to
+-h around it (h = 1 / (levels - 1): 1/16 for the 17-level digits, 1/255 for 8-bit images), the edge bins
reaching to infinity; its variance is the posterior variance of step 2, clipped as in DDPM's code.

**The probability-flow ODE** (Song et al. 2021) for any denoiser: dx/dlog(sigma) = x - D(x, sigma) carries
data at sigma_min to a Gaussian at sigma_max, and log p(x) = log N(x_T; 0, sigma_max^2) +
integral of (dim - tr dD/dx) dlog(sigma), integrated with classical RK4. The trace is exact in low
dimension (one backward pass per coordinate) or Hutchinson's estimate with a fixed Rademacher probe per
sample. Discrete data is dequantised uniformly within its bins (Theis et al. 2016; Song et al. 2021),
which bounds the discrete log-likelihood: log P(x) >= E_u log p(x + u) + dim log(2h).
"""
from __future__ import annotations

import math

import torch

from unmix.denoiser import sigma_batch
from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule

LN2 = math.log(2)
EXACT_TRACE_MAX_DIM = 16
TRACES = ("auto", "exact", "hutchinson")
VARIANCES = ("small", "large")


def bin_halfwidth(levels: int) -> float:
    """Half the spacing of `levels` evenly spaced values on [-1, 1]."""
    if levels < 2:
        raise UnmixError(f"discrete data needs at least 2 levels, got {levels}")
    return 1.0 / (levels - 1)


def uniform_bits_per_dim(levels: int) -> float:
    """The baseline every model should beat: all levels equally likely."""
    return math.log2(levels)


def _dim(x: torch.Tensor) -> int:
    return math.prod(x.shape[1:])


def _sq_norm(x: torch.Tensor) -> torch.Tensor:
    return x.pow(2).flatten(1).sum(1)


# -- the variational bound ---------------------------------------------------------------------------
def _log_prob_between(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(hi) - Phi(lo)) for lo < hi, stable in both tails (infinite edges allowed)."""
    flip = lo > 0  # use the upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp((log_a - log_b).clamp(max=-1e-12)))


def discretized_gaussian_log_likelihood(x0: torch.Tensor, mean: torch.Tensor, std: float, halfwidth: float) -> torch.Tensor:
    """Per-sample log P(x0) [N] in nats when each value is binned to +-halfwidth; edge bins reach to +-infinity."""
    lo = torch.where(x0 <= -1 + 1e-6, -math.inf, (x0 - halfwidth - mean) / std)
    hi = torch.where(x0 >= 1 - 1e-6, math.inf, (x0 + halfwidth - mean) / std)
    return _log_prob_between(lo, hi).flatten(1).sum(1)


def _vlb_terms(denoiser, x0, schedule: DiscreteSchedule, halfwidth: float, variance: str, generator, cond, dtype):
    """Per-sample (prior, diffusion, decoder) terms of the VLB in nats."""
    sig = schedule.sigmas  # float64, index 0 = DDPM's t = 1
    betas = schedule.betas.to(torch.float64)
    ab = schedule.alphas_cumprod
    x0 = x0.to(torch.float64)
    n, dim = x0.shape[0], _dim(x0)
    prior = 0.5 * (ab[-1] * _sq_norm(x0) - dim * ab[-1] - dim * torch.log1p(-ab[-1]))
    diffusion = torch.zeros(n, dtype=torch.float64, device=x0.device)
    for i in range(1, schedule.num_steps):  # DDPM's t = i + 1 = 2..T
        err = _sq_norm(x0 - _denoise(denoiser, x0, float(sig[i]), generator, cond, dtype))
        snr_drop = float(1 / sig[i - 1] ** 2 - 1 / sig[i] ** 2)
        if variance == "small":
            diffusion += 0.5 * snr_drop * err
        else:
            post_var = float(betas[i] * (1 - ab[i - 1]) / (1 - ab[i]))
            ratio = float(betas[i]) / post_var
            coef = snr_drop * post_var / float(betas[i])  # c0^2 / beta_t, c0 the posterior mean's weight on x0
            diffusion += 0.5 * dim * (math.log(ratio) + 1 / ratio - 1) + 0.5 * coef * err
    decoder_std = math.sqrt(float(betas[1] * (1 - ab[0]) / (1 - ab[1])))
    mean = _denoise(denoiser, x0, float(sig[0]), generator, cond, dtype)
    decoder = -discretized_gaussian_log_likelihood(x0, mean, decoder_std, halfwidth)
    return prior, diffusion, decoder


def _denoise(denoiser, x0, sigma: float, generator, cond, dtype) -> torch.Tensor:
    """D(x0 + sigma * eps, sigma) for fresh noise, the denoiser fed in `dtype`, the result in float64."""
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64).to(x0.device)
    x = (x0 + sigma * noise).to(dtype)
    return denoiser(x, torch.full((x0.shape[0],), sigma, dtype=dtype, device=x0.device), cond).to(torch.float64)


@torch.no_grad()
def vlb_bits_per_dim(denoiser, x0: torch.Tensor, schedule: DiscreteSchedule, levels: int, *,
                     variance: str = "small", generator: torch.Generator | None = None, cond=None,
                     batch_size: int = 512, dtype: torch.dtype = torch.float32, progress=None) -> dict[str, float]:
    """The DDPM variational bound on -log2 P(x0) per dimension, for data on `levels` values in [-1, 1].

    Returns the mean total and its parts (prior, diffusion, decoder), all in bits/dim, and n. Every step
    of the schedule is evaluated for every sample (num_steps denoiser calls per batch).
    """
    if variance not in VARIANCES:
        raise UnmixError(f"unknown decoder variance {variance!r}; valid: {', '.join(VARIANCES)}")
    if not isinstance(schedule, DiscreteSchedule):
        raise UnmixError("the VLB needs a discrete-time model (ddpm or v recipe); use the ODE likelihood instead")
    halfwidth = bin_halfwidth(levels)
    parts = {"prior": 0.0, "diffusion": 0.0, "decoder": 0.0}
    total = []
    for lo in range(0, x0.shape[0], batch_size):
        xb = x0[lo:lo + batch_size]
        cb = None if cond is None else cond[lo:lo + batch_size]
        terms = _vlb_terms(denoiser, xb, schedule, halfwidth, variance, generator, cb, dtype)
        scale = 1 / (_dim(xb) * LN2)
        for name, t in zip(parts, terms):
            parts[name] += float(t.sum()) * scale
        total.append(sum(terms) * scale)
        _report(progress, min(x0.shape[0], lo + batch_size), x0.shape[0])
    bpd = torch.cat(total)
    n = x0.shape[0]
    return {"bits_per_dim": float(bpd.mean()), **{k: v / n for k, v in parts.items()},
            "bits_per_dim_sem": float(bpd.std() / math.sqrt(n)) if n > 1 else math.nan, "n": n}


# -- the probability-flow ODE ---------------------------------------------------------------------------
def _trace_kind(trace: str, dim: int) -> str:
    if trace not in TRACES:
        raise UnmixError(f"unknown trace estimator {trace!r}; valid: {', '.join(TRACES)}")
    if trace == "auto":
        return "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
    return trace


def _drift_and_divergence(denoiser, x, sigma: float, probe, cond, dtype):
    """(x - D(x, sigma), dim - tr dD/dx): the ODE's velocity in log sigma and its divergence (float64)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        xin = x.to(dtype)
        d = denoiser(xin, sigma_batch(sigma, xin), cond).to(x.dtype)
        if probe is None:
            flat = d.flatten(1)
            tr = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
            for i in range(flat.shape[1]):
                (g,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=i + 1 < flat.shape[1])
                tr = tr + g.flatten(1)[:, i]
        else:
            (g,) = torch.autograd.grad((d * probe).sum(), x)
            tr = (g * probe).flatten(1).sum(1)
    return (x - d).detach(), (_dim(x) - tr).detach()


def ode_log_likelihood(denoiser, x: torch.Tensor, *, sigma_min: float = 0.002, sigma_max: float = 80.0,
                       steps: int = 64, trace: str = "auto", generator: torch.Generator | None = None,
                       cond=None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """log p_{sigma_min}(x) in nats per sample [N], through the probability-flow ODE of `denoiser`.

    RK4 with `steps` uniform steps in log sigma (4 denoiser calls each). The prior at sigma_max is
    N(0, sigma_max^2 I), exact up to O(Var(data) / sigma_max^2) per dimension. The ODE state is float64;
    the denoiser is fed `dtype`.
    """
    if not 0 < sigma_min < sigma_max:
        raise UnmixError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if steps < 1:
        raise UnmixError(f"the ODE needs at least 1 step, got {steps}")
    x = torch.as_tensor(x).to(torch.float64)
    dim = _dim(x)
    kind = _trace_kind(trace, dim)
    probe = None
    if kind == "hutchinson":
        probe = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x)
    u0, u1 = math.log(sigma_min), math.log(sigma_max)
    h = (u1 - u0) / steps
    delta = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def f(u, y):
        return _drift_and_divergence(denoiser, y, math.exp(u), probe, cond, dtype)

    for i in range(steps):
        u = u0 + i * h
        k1, l1 = f(u, x)
        k2, l2 = f(u + h / 2, x + h / 2 * k1)
        k3, l3 = f(u + h / 2, x + h / 2 * k2)
        k4, l4 = f(u + h, x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        delta = delta + h / 6 * (l1 + 2 * l2 + 2 * l3 + l4)
    prior = -0.5 * _sq_norm(x) / sigma_max**2 - 0.5 * dim * math.log(2 * math.pi * sigma_max**2)
    return prior + delta


def ode_bits_per_dim(denoiser, x0: torch.Tensor, levels: int, *, sigma_min: float = 0.002,
                     sigma_max: float = 80.0, steps: int = 64, trace: str = "auto",
                     generator: torch.Generator | None = None, cond=None, batch_size: int = 256,
                     dtype: torch.dtype = torch.float32, progress=None) -> dict[str, float]:
    """Upper bound on -log2 P(x0) per dimension for data on `levels` values, by uniform dequantisation:
    each value moves uniformly within its bin (+-h) before the ODE log-density is taken."""
    h = bin_halfwidth(levels)
    dim = _dim(x0)
    out = []
    for lo in range(0, x0.shape[0], batch_size):
        xb = x0[lo:lo + batch_size].to(torch.float64)
        u = ((torch.rand(xb.shape, generator=generator, dtype=torch.float64) * 2 - 1) * h).to(xb.device)
        logp = ode_log_likelihood(denoiser, xb + u, sigma_min=sigma_min, sigma_max=sigma_max, steps=steps,
                                  trace=trace, generator=generator, dtype=dtype,
                                  cond=None if cond is None else cond[lo:lo + batch_size])
        out.append(-(logp + dim * math.log(2 * h)) / (dim * LN2))
        _report(progress, min(x0.shape[0], lo + batch_size), x0.shape[0])
    bpd = torch.cat(out)
    n = x0.shape[0]
    return {"bits_per_dim": float(bpd.mean()), "bits_per_dim_sem": float(bpd.std() / math.sqrt(n)) if n > 1 else math.nan,
            "n": n}


# -- measuring a model on its own data ---------------------------------------------------------------
METHODS = ("auto", "vlb", "ode")


def data_levels(data: torch.Tensor) -> int | None:
    """Number of evenly spaced values discrete data takes (256 for uint8 images), None for continuous data."""
    if data.dtype == torch.uint8:
        return 256
    values = torch.unique(data)
    if len(values) > 256 or len(values) < 2:
        return None
    spacing = torch.diff(values.double())
    return len(values) if torch.allclose(spacing, spacing[0].expand_as(spacing), rtol=1e-3) else None


def toy_nll(denoiser, x0: torch.Tensor, *, sigma_min: float, sigma_max: float, steps: int = 64, trace: str = "auto",
            generator: torch.Generator | None = None, batch_size: int = 256, progress=None) -> dict:
    """Continuous data (the 2-D toys): bits/dim and the mean log-likelihood per point in nats, with its error."""
    n, parts = x0.shape[0], []
    for lo in range(0, n, batch_size):
        parts.append(ode_log_likelihood(denoiser, x0[lo:lo + batch_size], sigma_min=sigma_min, sigma_max=sigma_max,
                                        steps=steps, trace=trace, generator=generator))
        _report(progress, min(n, lo + batch_size), n)
    logp = torch.cat(parts)
    return {"bits_per_dim": float(-logp.mean() / (_dim(x0) * LN2)), "log_likelihood_nats": float(logp.mean()),
            "log_likelihood_nats_sem": float(logp.std() / math.sqrt(n)) if n > 1 else math.nan, "n": n,
            "sigma_min": sigma_min, "steps": steps}


def _report(progress, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
