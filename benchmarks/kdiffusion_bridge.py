"""Run k-diffusion's samplers on an unmix denoiser, so both are compared on the same exact model.

k-diffusion's convention is unmix's: a denoiser model(x, sigma) -> x0_hat in x = x0 + sigma * eps
units, so the adapter only counts calls. Each sampler is run on the grids a k-diffusion user reaches
for: its Karras grid over the EDM range (0.002, 80) and over the DDPM model's range, the grid its
DDPM wrapper builds (timesteps spaced linearly over the 1000-step linear-beta table, then sigma), and
its continuous VP grid. k-diffusion is a benchmark extra only: unmix itself never imports it.

k-diffusion's package __init__ imports its training stack (torchvision, CLIP, clean-fid, ...), which
a CPU-only torch install cannot import; the samplers need only `utils.append_dims`, so `load()`
imports `k_diffusion.sampling` and `k_diffusion.external` under a package stub that provides it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import torch

from unmix.schedules import DiscreteSchedule


def load():
    """(sampling, external) modules of the installed k-diffusion, or None if it is not installed."""
    if "k_diffusion.sampling" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None:
            return None
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        utils = types.ModuleType("k_diffusion.utils")
        utils.append_dims = lambda v, ndim: v[(...,) + (None,) * (ndim - v.ndim)]
        pkg.utils = utils
        sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")


# name -> (function name, denoiser calls for a grid of n levels before the final 0)
SAMPLERS = {
    "euler": ("sample_euler", lambda n: n),
    "euler_ancestral": ("sample_euler_ancestral", lambda n: n),
    "heun": ("sample_heun", lambda n: 2 * n - 1),
    "dpm_2": ("sample_dpm_2", lambda n: 2 * n - 1),
    "dpm_2_ancestral": ("sample_dpm_2_ancestral", lambda n: 2 * n - 1),
    "lms": ("sample_lms", lambda n: n),
    "dpmpp_2s_ancestral": ("sample_dpmpp_2s_ancestral", lambda n: 2 * n - 1),
    "dpmpp_sde": ("sample_dpmpp_sde", lambda n: 2 * n - 1),
    "dpmpp_2m": ("sample_dpmpp_2m", lambda n: n),
    "dpmpp_2m_sde": ("sample_dpmpp_2m_sde", lambda n: n),
    "dpmpp_3m_sde": ("sample_dpmpp_3m_sde", lambda n: n),
}


def ddpm_schedule() -> DiscreteSchedule:
    return DiscreteSchedule.linear()  # the same 1000-step linear betas as the diffusers peers


def grids(kd_sampling, kd_external):
    """grid name -> (function n -> descending float64 sigmas ending at 0, (sigma_min, sigma_max))."""
    table = ddpm_schedule().sigmas.float()
    vp_min, vp_max = float(table[0]), float(table[-1])
    discrete = kd_external.DiscreteSchedule(table, quantize=False)
    vp = kd_sampling.get_sigmas_vp(2)
    return {
        "karras": (lambda n: kd_sampling.get_sigmas_karras(n, 0.002, 80.0), (0.002, 80.0)),
        "karras VP range": (lambda n: kd_sampling.get_sigmas_karras(n, vp_min, vp_max), (vp_min, vp_max)),
        "DDPM": (lambda n: discrete.get_sigmas(n), (vp_min, vp_max)),
        "VP": (lambda n: kd_sampling.get_sigmas_vp(n), (float(vp[1]), float(vp[0]))),
    }


def variants():
    """name -> runner(denoiser, shape, nfe, seed) -> (samples, calls), one per sampler and grid."""
    mods = load()
    if mods is None:
        return {}
    kd, ext = mods
    out, ranges = {}, []
    for gname, (grid, span) in grids(kd, ext).items():
        for sname, (fn, calls) in SAMPLERS.items():
            out[f"{sname} ({gname})"] = _runner(getattr(kd, fn), grid, calls)
        if span not in ranges:  # DPM-Solver-fast takes a range, not a grid: once per distinct range
            ranges.append(span)
    for smin, smax in ranges:
        out[f"dpm_fast (sigma {smin:.3g}-{smax:.3g})"] = _fast_runner(kd.sample_dpm_fast, smin, smax)
    return out


class _Counting:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        return self.denoiser(x, sigma.to(x.dtype))


def _levels_for_budget(calls, nfe: int) -> int | None:
    fits = [n for n in range(1, nfe + 1) if calls(n) <= nfe]
    return max(fits) if fits else None


def _runner(fn, grid, calls):
    def run(denoiser, shape, nfe: int, seed: int, dtype=torch.float64):
        n = _levels_for_budget(calls, nfe)
        if n is None:
            return None, 0
        sigmas = grid(n).to(torch.float64)
        model = _Counting(denoiser)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * sigmas[0]
        torch.manual_seed(seed)  # ancestral / SDE samplers draw from the global generator
        x = fn(model, x, sigmas.to(dtype), disable=True)
        return x, model.calls

    return run


def _fast_runner(fn, sigma_min, sigma_max):
    """DPM-Solver-fast takes its range and NFE directly (it ends at sigma_min, as k-diffusion returns it)."""

    def run(denoiser, shape, nfe: int, seed: int, dtype=torch.float64):
        model = _Counting(denoiser)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * sigma_max
        x = fn(model, x, sigma_min, sigma_max, nfe, disable=True)
        return x, model.calls

    return run
