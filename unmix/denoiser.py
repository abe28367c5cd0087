"""The one interface: a denoiser D(x, sigma, cond=None) -> x0_hat, the posterior mean E[x0 | x_sigma].

`x` is a batch [N, ...] in the x = x0 + sigma * eps convention, `sigma` a tensor [N] (a scalar is
broadcast), `cond` optional per-sample conditioning. Samplers, guidance, losses and likelihoods
consume nothing else.

A network becomes a denoiser through a parameterisation, written as the preconditioning of
Karras et al. 2022 (table 1):  D(x, s) = c_skip(s) x + c_out(s) F(c_in(s) x, c_noise(s)).

    eps   VP epsilon prediction (DDPM):  c_skip 1,              c_out -s,               c_in 1/sqrt(1+s^2)
    x0    direct x0 prediction:          c_skip 0,              c_out 1,                c_in 1/sqrt(1+s^2)
    v     VP v-prediction (Salimans):    c_skip 1/(1+s^2),      c_out -s/sqrt(1+s^2),   c_in 1/sqrt(1+s^2)
    edm   EDM with sigma_data:           c_skip sd^2/(s^2+sd^2), c_out s sd/sqrt(s^2+sd^2), c_in 1/sqrt(s^2+sd^2)

c_noise is the discrete timestep t (fractional between table entries) when a DiscreteSchedule
is given, else ln(sigma)/4. The network is called as net(x_in, c_noise, cond) (cond may be None).
"""
from __future__ import annotations

import inspect
from typing import Protocol

import torch
from torch import nn

from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule

PARAMETERIZATIONS = ("eps", "x0", "v", "edm")


class Denoiser(Protocol):
    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor: ...


def sigma_batch(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a [N] tensor in x's dtype and device (a scalar is broadcast over the batch)."""
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    sigma = torch.as_tensor(sigma, dtype=dtype, device=x.device)  # python floats go straight to x's precision
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise UnmixError(f"sigma must be a scalar or have shape [{x.shape[0]}], got {tuple(sigma.shape)}")
    return sigma


def expand_like(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample [N] tensor so it broadcasts against x [N, ...]."""
    return v.reshape(v.shape[0], *([1] * (x.ndim - 1)))


def preconditioning(
    parameterization: str, sigma: torch.Tensor, sigma_data: float = 0.5, schedule: DiscreteSchedule | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in, c_noise) for a parameterisation, each shaped like sigma."""
    s = sigma
    if parameterization == "edm":
        sd = sigma_data
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
    elif parameterization in ("eps", "x0", "v"):
        c_in = 1 / (1 + s**2).sqrt()
        if parameterization == "eps":
            c_skip, c_out = torch.ones_like(s), -s
        elif parameterization == "x0":
            c_skip, c_out = torch.zeros_like(s), torch.ones_like(s)
        else:
            c_skip, c_out = 1 / (1 + s**2), -s / (1 + s**2).sqrt()
    else:
        raise UnmixError(f"unknown parameterization {parameterization!r}; valid: {', '.join(PARAMETERIZATIONS)}")
    if schedule is not None:
        c_noise = schedule.sigma_to_t(s.detach().to(torch.float64).cpu()).to(s.device, s.dtype)
    else:
        c_noise = s.log() / 4
    return c_skip, c_out, c_in, c_noise


class NetworkDenoiser(nn.Module):
    """Wraps a network net(x_in, c_noise, cond) -> F into a denoiser through a parameterisation.

    `quantize_t` rounds the timestep to the nearest table entry, for discrete-time models evaluated
    exactly at their training timesteps (as DDPM/DDIM do).
    """

    def __init__(
        self,
        net: nn.Module,
        parameterization: str = "edm",
        sigma_data: float = 0.5,
        schedule: DiscreteSchedule | None = None,
        quantize_t: bool = False,
    ):
        super().__init__()
        if parameterization not in PARAMETERIZATIONS:
            raise UnmixError(f"unknown parameterization {parameterization!r}; valid: {', '.join(PARAMETERIZATIONS)}")
        self.net = net
        self.parameterization = parameterization
        self.sigma_data = sigma_data
        self.schedule = schedule
        self.quantize_t = quantize_t

    def precond(self, sigma: torch.Tensor):
        c_skip, c_out, c_in, c_noise = preconditioning(self.parameterization, sigma, self.sigma_data, self.schedule)
        if self.quantize_t and self.schedule is not None:
            c_noise = c_noise.round()
        return c_skip, c_out, c_in, c_noise

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        sigma = sigma_batch(sigma, x)
        if torch.any(sigma <= 0):
            raise UnmixError("a network denoiser needs sigma > 0 (sigma = 0 is clean data: nothing to denoise)")
        c_skip, c_out, c_in, c_noise = (expand_like(c, x) if i < 3 else c for i, c in enumerate(self.precond(sigma)))
        return c_skip * x + c_out * self.network(x, sigma, c_in, c_noise, cond).to(x.dtype)

    def network(self, x: torch.Tensor, sigma: torch.Tensor, c_in: torch.Tensor, c_noise: torch.Tensor, cond,
                exclude: torch.Tensor | None = None) -> torch.Tensor:
        """F(c_in x, c_noise, cond): the raw network output. The hook: a net with a method
        `extra_inputs(x, sigma, exclude) -> dict` gets those keyword arguments too, computed from the raw x and sigma
        (e.g. the training set's ideal denoiser, unmix.nets.neighbours; `exclude`: items to leave out of it). A
        "base" among them is an estimate of the clean x that replaces EDM's prior mean of zero: D = c_skip x +
        (1 - c_skip) base + c_out F, the Gaussian posterior mean around the base plus the net's correction (at low
        noise the input itself, at high noise the base; a zero-initialised net starts there)."""
        hook = getattr(unwrap(self.net), "extra_inputs", None)
        extra = hook(x, sigma, exclude) if hook is not None else {}
        base = extra.pop("base", None)
        out = self.net(c_in * x, c_noise, cond, **extra)
        if base is None:
            return out
        c_skip, c_out = (expand_like(c, x) for c in self.precond(sigma_batch(sigma, x))[:2])
        return out + (1 - c_skip) * base.to(out.dtype) / c_out


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside DDP (`.module`) and torch.compile (`._orig_mod`) wrappers."""
    while True:
        inner = getattr(net, "module", None) or getattr(net, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return net
        net = inner


def as_denoiser(fn) -> Denoiser:
    """`fn` as a denoiser D(x, sigma, cond=None), whether it takes (x, sigma, cond) or just (x, sigma).

    The two-argument form is k-diffusion's convention for an unconditional model. The signature is
    read once, here; callables that take a third positional argument (or *args, as nn.Module does)
    are returned unchanged, so wrapping twice is harmless.
    """
    if isinstance(fn, _Unconditional) or _positional_arity(fn) != 2:
        return fn
    return _Unconditional(fn)


def _positional_arity(fn) -> int | None:
    """How many positional arguments fn accepts (None: any number, or the signature cannot be read)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


class _Unconditional:
    """A two-argument denoiser D(x, sigma) seen through the three-argument interface (cond must be None).

    Other attributes (event_shape, sigma_data, ...) are read from the wrapped callable.
    """

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, sigma, cond=None):
        if cond is not None:
            raise UnmixError("this denoiser takes (x, sigma) only, so it cannot be conditioned: pass cond=None")
        return self.fn(x, sigma)

    def __getattr__(self, name):
        if name == "fn":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.fn, name)


class CountingDenoiser:
    """Counts network evaluations (NFE): one per call, whatever the batch size."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.nfe = 0

    def __call__(self, x, sigma, cond=None):
        self.nfe += 1
        return self.denoiser(x, sigma, cond)
