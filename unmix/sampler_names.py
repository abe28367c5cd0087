"""The sampler names users know (A1111, ComfyUI, diffusers' scheduler classes) as an unmix sampler and grid.

A name is a solver plus a sigma grid. The solvers are unmix's own; the grids are:

    normal     A1111's / ComfyUI's default: the model's table at t = linspace(T - 1, 0, steps), log-sigma
               interpolated between entries (k-diffusion's DiscreteSchedule.get_sigmas), then 0
    karras     Karras et al. 2022's rho = 7 grid between the model's sigma_min and sigma_max
    exponential  uniform in log sigma over the same range
    model      the model's own scheduler timesteps as diffusers spaces them (timestep_spacing, steps_offset;
               multistep solvers lay out steps + 1 and drop the lowest): a diffusers folder's scheduler swapped
               for that class, to the rounding of float32 (tests/test_stable_diffusion.py)

On a model without a discrete table (EDM recipes), normal and model are the exponential grid.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from unmix.errors import UnmixError
from unmix.samplers import SAMPLERS, get_sampler
from unmix.schedules import append_zero, discrete_sigmas, karras_sigmas, loglinear_sigmas

GRIDS = ("normal", "karras", "exponential", "model")


@dataclass(frozen=True)
class Named:
    sampler: str  # an unmix sampler (unmix.samplers.SAMPLERS)
    grid: str  # one of GRIDS
    multistep: bool = False  # diffusers' multistep spacing (grid "model")


_A1111 = {
    "Euler": Named("euler", "normal"), "Euler a": Named("euler_ancestral", "normal"),
    "Heun": Named("heun", "normal"), "LMS": Named("ipndm_v", "normal"), "LMS Karras": Named("ipndm_v", "karras"),
    "DPM++ 2M": Named("dpmpp_2m", "normal"), "DPM++ 2M Karras": Named("dpmpp_2m", "karras"),
    "DPM++ 3M": Named("dpmpp_3m", "normal"), "DPM++ 3M Karras": Named("dpmpp_3m", "karras"),
    "DDIM": Named("ddim", "model"), "DDPM": Named("ddpm", "model"), "UniPC": Named("unipc", "normal"),
    "Euler Karras": Named("euler", "karras"), "Heun Karras": Named("heun", "karras"),
}
# k-diffusion's LMS is the linear multistep method with variable-step Lagrange weights: unmix's ipndm_v.
_COMFY_SAMPLERS = {"euler": "euler", "euler_ancestral": "euler_ancestral", "heun": "heun", "lms": "ipndm_v",
                   "dpmpp_2m": "dpmpp_2m", "dpmpp_3m": "dpmpp_3m", "ddim": "ddim", "ddpm": "ddpm",
                   "uni_pc_bh2": "unipc", "ipndm": "ipndm", "ipndm_v": "ipndm_v"}
_COMFY_SCHEDULERS = {"normal": "normal", "karras": "karras", "exponential": "exponential", "ddim_uniform": "model"}
_DIFFUSERS = {
    "DDIMScheduler": Named("ddim", "model"), "DDPMScheduler": Named("ddpm", "model"),
    "EulerDiscreteScheduler": Named("euler", "model"), "EulerAncestralDiscreteScheduler": Named("euler_ancestral", "model"),
    "HeunDiscreteScheduler": Named("heun", "model"), "LMSDiscreteScheduler": Named("ipndm_v", "model"),
    "DPMSolverMultistepScheduler": Named("dpmpp_2m", "model", True),
    "UniPCMultistepScheduler": Named("unipc", "model", True),
}
NAMES: dict[str, Named] = {
    **_A1111, **_DIFFUSERS,
    **{f"{k} {g}": Named(v, s) for k, v in _COMFY_SAMPLERS.items() for g, s in _COMFY_SCHEDULERS.items()},
}


def sampler_names() -> list[str]:
    """Every name `named_sampler` takes: unmix's samplers, then the A1111 / diffusers / ComfyUI ones."""
    return [*SAMPLERS, *NAMES]


def lookup(name: str) -> Named:
    """The entry of a known name; case and spacing do not matter ('dpm++ 2m karras', 'euler  a'); a ComfyUI
    sampler alone takes its default scheduler, 'normal'."""
    key = " ".join(str(name).split()).lower()
    table = {k.lower(): v for k, v in NAMES.items()}
    if key in table:
        return table[key]
    if key in _COMFY_SAMPLERS:
        return Named(_COMFY_SAMPLERS[key], "normal")
    raise UnmixError(f"unknown sampler {name!r}; valid: unmix's {', '.join(SAMPLERS)}, or a name such as "
                     "'DPM++ 2M Karras', 'Euler a', 'DDIM', 'UniPC', 'dpmpp_2m karras', 'EulerDiscreteScheduler'")


def grid_sigmas(recipe, grid: str, steps: int, multistep: bool = False) -> torch.Tensor:
    """The descending sigma grid (ending at 0) of `steps` levels that `grid` names, for a model's recipe."""
    if grid not in GRIDS:
        raise UnmixError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    lo, hi = recipe.sigma_range()
    table = recipe.discrete
    if grid == "karras":
        return karras_sigmas(steps, lo, hi)
    if grid == "exponential" or table is None:
        return loglinear_sigmas(steps, lo, hi)
    if grid == "normal":
        t = torch.linspace(table.num_steps - 1, 0, steps, dtype=torch.float64)
        return append_zero(table.t_to_sigma(t))
    if hasattr(recipe, "pipeline_sigmas"):  # a diffusers model: its scheduler's own spacing
        return recipe.pipeline_sigmas(steps, multistep=multistep)
    return discrete_sigmas(table, steps, "leading")


def named_sampler(name: str, recipe, nfe: int) -> tuple[str, dict]:
    """(unmix sampler, sample() options) for a sampler name: an unmix sampler as itself (its own grid), a known
    name as its solver on its grid with as many steps as `nfe` buys (Heun: (nfe + 1) // 2)."""
    if name in SAMPLERS:
        return name, {}
    named = lookup(name)
    steps = get_sampler(named.sampler).steps_for(nfe)
    if steps < 1:
        raise UnmixError(f"sampler {name!r} needs nfe >= 1, got {nfe}")
    return named.sampler, {"sigmas": grid_sigmas(recipe, named.grid, steps, named.multistep)}
