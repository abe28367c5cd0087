"""Feed an unmix denoiser to diffusers schedulers, so both are compared on the same exact model.

diffusers' discrete schedulers expect an epsilon model of (VP sample, timestep); its EDM schedulers
expect the raw network output F with D = c_skip x + c_out F. Both are closed-form functions of D.
diffusers is a bench/test extra only: unmix itself never imports it.
"""
from __future__ import annotations

import torch

from unmix.denoiser import expand_like, preconditioning
from unmix.schedules import DiscreteSchedule


def network_output(denoiser, parameterization: str, schedule: DiscreteSchedule | None = None, sigma_data: float = 0.5):
    """F(c_in x, c_noise) with D = c_skip x + c_out F: the raw output of a network of this parameterisation.

    The scalings are the library's own (unmix.denoiser.preconditioning), so the bridge is exactly the
    inverse of NetworkDenoiser. `eps` with a DiscreteSchedule is what diffusers' DDPM-family
    schedulers call (VP sample, timestep); `edm` is what its EDM schedulers call (c_in x, sigma).
    """

    def model(x_in: torch.Tensor, level) -> torch.Tensor:
        level = torch.as_tensor(level, dtype=torch.float64).reshape(-1).expand(x_in.shape[0])
        sigma = (schedule.t_to_sigma(level) if schedule is not None else level).to(x_in.dtype)
        c_skip, c_out, c_in, _ = (expand_like(c, x_in) for c in preconditioning(parameterization, sigma, sigma_data))
        x = x_in / c_in
        return (denoiser(x, sigma) - c_skip * x) / c_out

    return model


def eps_model(denoiser, schedule: DiscreteSchedule):
    """eps(x_vp, t): the epsilon prediction a VP model would make, from a sigma-space denoiser."""
    return network_output(denoiser, "eps", schedule)


def edm_output_model(denoiser, sigma_data: float = 0.5):
    """F(c_in x, sigma) such that c_skip x + c_out F = D(x, sigma): what diffusers' EDM schedulers expect."""
    return network_output(denoiser, "edm", sigma_data=sigma_data)


def make_variants():
    """name -> factory() of configured diffusers schedulers a user would reach for (linear betas, T=1000)."""
    import diffusers as d

    base = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    v = {
        "DDPM": lambda: d.DDPMScheduler(**base, clip_sample=False),
        "DDIM": lambda: d.DDIMScheduler(**base, clip_sample=False, set_alpha_to_one=True),
        "DDIM trailing": lambda: d.DDIMScheduler(**base, clip_sample=False, timestep_spacing="trailing"),
        "PNDM (PLMS)": lambda: d.PNDMScheduler(**base, skip_prk_steps=True),
        "Euler": lambda: d.EulerDiscreteScheduler(**base),
        "Euler karras": lambda: d.EulerDiscreteScheduler(**base, use_karras_sigmas=True),
        "Euler ancestral": lambda: d.EulerAncestralDiscreteScheduler(**base),
        "Heun": lambda: d.HeunDiscreteScheduler(**base),
        "Heun karras": lambda: d.HeunDiscreteScheduler(**base, use_karras_sigmas=True),
        "LMS karras": lambda: d.LMSDiscreteScheduler(**base, use_karras_sigmas=True),
        "KDPM2": lambda: d.KDPM2DiscreteScheduler(**base),
        "DPM++ 2M": lambda: d.DPMSolverMultistepScheduler(**base),
        "DPM++ 2M karras": lambda: d.DPMSolverMultistepScheduler(**base, use_karras_sigmas=True),
        "DPM++ 3M": lambda: d.DPMSolverMultistepScheduler(**base, solver_order=3),
        "DPM++ 3M karras": lambda: d.DPMSolverMultistepScheduler(**base, solver_order=3, use_karras_sigmas=True),
        "DPM++ 2S singlestep": lambda: d.DPMSolverSinglestepScheduler(**base),
        "UniPC": lambda: d.UniPCMultistepScheduler(**base),
        "UniPC karras": lambda: d.UniPCMultistepScheduler(**base, use_karras_sigmas=True),
        "DEIS": lambda: d.DEISMultistepScheduler(**base),
        "EDM Euler": lambda: d.EDMEulerScheduler(),
        "EDM DPM++ 2M": lambda: d.EDMDPMSolverMultistepScheduler(),
        "EDM DPM++ 3M": lambda: d.EDMDPMSolverMultistepScheduler(solver_order=3),
    }
    return v


def steps_for_budget(factory, nfe: int) -> int | None:
    """The most inference steps whose model calls fit in `nfe` (None if even one step does not)."""
    best = None
    for n in range(1, nfe + 1):
        sch = factory()
        try:
            sch.set_timesteps(n)
        except Exception:  # some schedulers refuse some step counts
            continue
        if len(sch.timesteps) <= nfe:
            best = n
        else:
            break
    return best


def run(factory, denoiser, shape, nfe: int, generator: torch.Generator, dtype=torch.float64):
    """Sample with a diffusers scheduler under an NFE budget; returns (samples in sigma units, calls)."""
    n = steps_for_budget(factory, nfe)
    if n is None:
        return None, 0
    sch = factory()
    sch.set_timesteps(n)
    is_edm = type(sch).__name__.startswith("EDM")
    schedule = DiscreteSchedule.linear()
    model = edm_output_model(denoiser) if is_edm else eps_model(denoiser, schedule)
    x = torch.randn(shape, generator=generator, dtype=dtype) * float(sch.init_noise_sigma)
    calls = 0
    for t in sch.timesteps:
        x_in = sch.scale_model_input(x, t)
        if is_edm:
            out = model(x_in, sch.sigmas[sch.step_index if sch.step_index is not None else 0])
        else:
            out = model(x_in, t)
        calls += 1
        kwargs = {"generator": generator} if "generator" in sch.step.__code__.co_varnames else {}
        x = sch.step(out, t, x, **kwargs).prev_sample
    return x, calls  # every variant ends at sigma = 0, so x is a clean sample
