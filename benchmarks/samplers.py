"""Sampler quality at equal NFE: unmix vs diffusers vs k-diffusion, on exact denoisers (no training noise).

Distributions: (a) "ring", 8 isotropic Gaussians on a circle of radius 0.8, std 0.05, equal weights;
(b) "digits", a 16-component diagonal mixture fitted to sklearn digits scaled to [-1, 1] (64-D).
Every method starts from the same fixed-seed noise (seed 3) and calls the same exact denoiser. Its N
samples are compared with N fresh true samples by
  - sliced W2 (256 fixed directions);
  - mode-weight error (unmix.metrics.exact.mode_weight_tv): each sample is assigned to its most responsible
    mixture component at sigma = 0, and the total-variation distance between the assigned frequencies and the
    true weights is reported (SW2 barely sees mode weights in 64-D; this does);
  - the gap in mean exact log-density (mean log p(true) - mean log p(samples), nats).
The floor is the same metrics for true vs true samples, averaged over 5 fresh true sets.

unmix rows use each sampler's default settings: exactly `unmix.sample(denoiser, shape, sampler=NAME,
nfe=N)`. unmix's default grids were tuned on other mixtures (benchmarks/tune_grid.py), never on these.
The peers are fed the same exact denoiser through the closed-form conversions below (diffusers' schedulers want
an eps model or EDM's raw network output; k-diffusion's samplers take unmix's convention as it is); a peer that
is not installed is left out with a line saying so (diffusers: `pip install -e .[bench]`).

    python benchmarks/samplers.py [--n 20000] [--nfe 3 4 5 10 20] [--dist ring digits] [--out docs/sampler_benchmark.md]
    python benchmarks/samplers.py --smoke     # every row at toy size, tables written to a temporary folder
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
import tempfile
import time
import types
import warnings
from datetime import date
from pathlib import Path

import torch

from unmix.analytic import digits_mixture, ring_of_gaussians
from unmix.denoiser import expand_like, preconditioning
from unmix.distributed import machine
from unmix.metrics.exact import fixed_directions, log_density_gap, mode_weight_tv
from unmix.samplers import DEFAULT_SAMPLER, list_samplers, sample
from unmix.schedules import DiscreteSchedule

DISTS = {"ring": ring_of_gaussians, "digits": digits_mixture}
SEED = 3
TV_SLACK = 0.01  # the tolerance on mode-weight error against the best peer
VP = DiscreteSchedule.linear()  # the 1000-step linear betas every peer's discrete schedule uses


# -- diffusers: its schedulers on an unmix denoiser ------------------------------------------------
def network_output(denoiser, parameterization: str, schedule: DiscreteSchedule | None = None, sigma_data: float = 0.5):
    """F(c_in x, c_noise) with D = c_skip x + c_out F: the raw output of a network of this parameterisation, the
    exact inverse of NetworkDenoiser (unmix.denoiser.preconditioning's scalings). `eps` with a DiscreteSchedule is
    what diffusers' DDPM-family schedulers call (VP sample, timestep); `edm` what its EDM schedulers call."""

    def model(x_in: torch.Tensor, level) -> torch.Tensor:
        level = torch.as_tensor(level, dtype=torch.float64).reshape(-1).expand(x_in.shape[0])
        sigma = (schedule.t_to_sigma(level) if schedule is not None else level).to(x_in.dtype)
        c_skip, c_out, c_in, _ = (expand_like(c, x_in) for c in preconditioning(parameterization, sigma, sigma_data))
        x = x_in / c_in
        return (denoiser(x, sigma) - c_skip * x) / c_out

    return model


def diffusers_variants() -> dict:
    """name -> factory() of configured diffusers schedulers a user would reach for (linear betas, T=1000)."""
    if importlib.util.find_spec("diffusers") is None:
        print("diffusers is not installed: its rows are left out (pip install -e .[bench])", flush=True)
        return {}
    import diffusers as d

    base = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear")
    return {
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


def run_diffusers(factory, denoiser, shape, nfe: int, generator: torch.Generator, dtype=torch.float64):
    """Sample with a diffusers scheduler under an NFE budget; returns (samples in sigma units, calls)."""
    n = steps_for_budget(factory, nfe)
    if n is None:
        return None, 0
    sch = factory()
    sch.set_timesteps(n)
    is_edm = type(sch).__name__.startswith("EDM")
    model = network_output(denoiser, "edm") if is_edm else network_output(denoiser, "eps", VP)
    x = torch.randn(shape, generator=generator, dtype=dtype) * float(sch.init_noise_sigma)
    calls = 0
    for t in sch.timesteps:
        x_in = sch.scale_model_input(x, t)
        out = model(x_in, sch.sigmas[sch.step_index if sch.step_index is not None else 0] if is_edm else t)
        calls += 1
        kwargs = {"generator": generator} if "generator" in sch.step.__code__.co_varnames else {}
        x = sch.step(out, t, x, **kwargs).prev_sample
    return x, calls  # every variant ends at sigma = 0, so x is a clean sample


# -- k-diffusion: its samplers on an unmix denoiser (the same convention: only calls are counted) ----------
def load_kdiffusion():
    """(sampling, external) modules of the installed k-diffusion, or None if it is not installed.

    Its package __init__ imports its training stack (torchvision, CLIP, clean-fid, ...), which a CPU-only torch
    install cannot import; the samplers need only `utils.append_dims`, so they are imported under a package stub
    that provides it."""
    if "k_diffusion.sampling" not in sys.modules:
        spec = importlib.util.find_spec("k_diffusion")
        if spec is None:
            print("k-diffusion is not installed: its rows are left out (pip install k-diffusion)", flush=True)
            return None
        pkg = types.ModuleType("k_diffusion")
        pkg.__path__ = list(spec.submodule_search_locations)
        utils = types.ModuleType("k_diffusion.utils")
        utils.append_dims = lambda v, ndim: v[(...,) + (None,) * (ndim - v.ndim)]
        pkg.utils = utils
        sys.modules.update({"k_diffusion": pkg, "k_diffusion.utils": utils})
    return importlib.import_module("k_diffusion.sampling"), importlib.import_module("k_diffusion.external")


# name -> (function name, denoiser calls for a grid of n levels before the final 0)
KD_SAMPLERS = {
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


def kd_grids(kd_sampling, kd_external):
    """The grids a k-diffusion user reaches for, name -> (n -> descending sigmas ending at 0, (sigma_min, sigma_max)):
    Karras over the EDM range and over the DDPM model's, the grid its DDPM wrapper builds, its continuous VP grid."""
    table = VP.sigmas.float()
    vp_min, vp_max = float(table[0]), float(table[-1])
    discrete = kd_external.DiscreteSchedule(table, quantize=False)
    vp = kd_sampling.get_sigmas_vp(2)
    return {
        "karras": (lambda n: kd_sampling.get_sigmas_karras(n, 0.002, 80.0), (0.002, 80.0)),
        "karras VP range": (lambda n: kd_sampling.get_sigmas_karras(n, vp_min, vp_max), (vp_min, vp_max)),
        "DDPM": (lambda n: discrete.get_sigmas(n), (vp_min, vp_max)),
        "VP": (lambda n: kd_sampling.get_sigmas_vp(n), (float(vp[1]), float(vp[0]))),
    }


def kdiffusion_variants() -> dict:
    """name -> runner(denoiser, shape, nfe, seed) -> (samples, calls), one per sampler and grid."""
    mods = load_kdiffusion()
    if mods is None:
        return {}
    kd, ext = mods
    out, ranges = {}, []
    for gname, (grid, span) in kd_grids(kd, ext).items():
        for sname, (fn, calls) in KD_SAMPLERS.items():
            out[f"{sname} ({gname})"] = _kd_runner(getattr(kd, fn), grid, calls)
        if span not in ranges:  # DPM-Solver-fast takes a range, not a grid: once per distinct range
            ranges.append(span)
    for smin, smax in ranges:
        out[f"dpm_fast (sigma {smin:.3g}-{smax:.3g})"] = _kd_fast_runner(kd.sample_dpm_fast, smin, smax)
    return out


class _Counting:
    def __init__(self, denoiser):
        self.denoiser, self.calls = denoiser, 0

    def __call__(self, x, sigma, **kwargs):
        self.calls += 1
        return self.denoiser(x, sigma.to(x.dtype))


def _kd_runner(fn, grid, calls):
    def run(denoiser, shape, nfe: int, seed: int, dtype=torch.float64):
        fits = [n for n in range(1, nfe + 1) if calls(n) <= nfe]
        if not fits:
            return None, 0
        sigmas = grid(max(fits)).to(torch.float64)
        model = _Counting(denoiser)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * sigmas[0]
        torch.manual_seed(seed)  # ancestral / SDE samplers draw from the global generator
        x = fn(model, x, sigmas.to(dtype), disable=True)
        return x, model.calls

    return run


def _kd_fast_runner(fn, sigma_min, sigma_max):
    """DPM-Solver-fast takes its range and NFE directly (it ends at sigma_min, as k-diffusion returns it)."""

    def run(denoiser, shape, nfe: int, seed: int, dtype=torch.float64):
        model = _Counting(denoiser)
        x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) * sigma_max
        x = fn(model, x, sigma_min, sigma_max, nfe, disable=True)
        return x, model.calls

    return run


# -- the benchmark ---------------------------------------------------------------------------------
class Reference:
    """N true samples and their sorted projections on sliced_w2's fixed directions, computed once:
    sw2(x) equals unmix.metrics.exact.sliced_w2(x, samples) without re-sorting the reference each time."""

    def __init__(self, samples: torch.Tensor):
        self.samples = samples
        flat = samples.reshape(samples.shape[0], -1).double()
        self.dirs = fixed_directions(flat.shape[1])
        self.sorted = (self.dirs @ flat.T).sort(1).values

    def sw2(self, x: torch.Tensor) -> float:
        proj = (self.dirs @ x.reshape(x.shape[0], -1).double().T).sort(1).values
        return float(((proj - self.sorted) ** 2).mean().sqrt())


def evaluate(gm, x, ref: Reference):
    return ref.sw2(x), mode_weight_tv(gm, x), log_density_gap(gm.log_prob, x, ref.samples)


def _row(lib, method, nfe, run):
    t0 = time.perf_counter()
    x, used = run()
    seconds = time.perf_counter() - t0
    return lib, method, nfe, used, x, seconds


def bench(dist: str, n: int, nfes: list[int], peers: bool = True):
    gm = DISTS[dist]()
    shape = (n, *gm.event_shape)
    ref = Reference(gm.sample(n, torch.Generator().manual_seed(1)))
    # one true-vs-true draw swings by +-30% (mode counts are multinomial): average five
    draws = [evaluate(gm, gm.sample(n, torch.Generator().manual_seed(10 + i)), ref) for i in range(5)]
    floor = tuple(sum(d[j] for d in draws) / len(draws) for j in range(3))
    print(dist, "floor", *floor, flush=True)
    jobs = []
    for name in list_samplers():
        for nfe in nfes:
            jobs.append(("unmix", name, nfe, lambda name=name, nfe=nfe: sample(
                gm, shape, sampler=name, nfe=nfe, generator=torch.Generator().manual_seed(SEED),
                dtype=torch.float64, return_nfe=True)))
    if peers:
        for name, factory in diffusers_variants().items():
            for nfe in nfes:
                jobs.append(("diffusers", name, nfe, lambda f=factory, nfe=nfe: run_diffusers(
                    f, gm, shape, nfe, torch.Generator().manual_seed(SEED))))
        for name, runner in kdiffusion_variants().items():
            for nfe in nfes:
                jobs.append(("k-diffusion", name, nfe, lambda r=runner, nfe=nfe: r(gm, shape, nfe, SEED)))
    rows = []  # (library, method, nfe, used, sw2, tv, gap, seconds)
    for lib, method, nfe, run in jobs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchsde's float-rounding notes on its interval ends
            lib, method, nfe, used, x, seconds = _row(lib, method, nfe, run)
        if x is None or not torch.isfinite(x).all():
            metrics = (math.nan,) * 3
        else:
            metrics = evaluate(gm, x, ref)
        rows.append((lib, method, nfe, used, *metrics, seconds))
        print(dist, *rows[-1], flush=True)
    return floor, rows


def best(rows, nfe, libs, key=4):
    cands = [r for r in rows if r[0] in libs and r[2] == nfe and r[key] == r[key]]
    return min(cands, key=lambda r: r[key]) if cands else None


def summary(dist, n, nfes, floor, rows) -> str:
    """The README table: unmix's default sampler (and its best one) against the best peer of each library."""
    out = [f"### {dist} (N = {n}; floor: SW2 {floor[0]:.4f}, mode-weight TV {floor[1]:.4f}, "
           f"log-density gap {floor[2]:+.3f} nats)", "",
           f"| NFE | unmix default `{DEFAULT_SAMPLER}` | best unmix sampler | best diffusers | best k-diffusion | "
           "lowest peer TV | default leads SW2? | default TV within 0.01 of best peer? |",
           "|---|---|---|---|---|---|---|---|"]
    peers = ("diffusers", "k-diffusion")
    cell = lambda r: "-" if r is None else f"{r[1]}: {r[4]:.4f} / {r[5]:.3f} / {r[6]:+.2f}"  # noqa: E731
    for k in nfes:
        u = next((r for r in rows if r[0] == "unmix" and r[1] == DEFAULT_SAMPLER and r[2] == k), None)
        if u is None:
            continue
        p, tv = best(rows, k, peers), best(rows, k, peers, key=5)
        lead = "-" if p is None else ("yes" if u[4] < p[4] else f"**no** ({p[1]} {p[4]:.4f})")
        tv_ok = "-" if tv is None else ("yes" if u[5] <= tv[5] + TV_SLACK else f"**no** (best {tv[5]:.3f})")
        out.append(f"| {k} | {u[4]:.4f} / {u[5]:.3f} / {u[6]:+.2f} | {cell(best(rows, k, ('unmix',)))} | "
                   f"{cell(best(rows, k, ('diffusers',)))} | {cell(best(rows, k, ('k-diffusion',)))} | "
                   f"{'-' if tv is None else f'{tv[1]} ({tv[0]}): {tv[5]:.3f}'} | {lead} | {tv_ok} |")
    out += ["", "Cells: SW2 / mode-weight TV / log-density gap (nats); \"best\" is by SW2. Lower is better for SW2 "
            "and TV; a gap below the floor's means samples sit in likelier places than true samples (collapsed "
            f"onto modes). unmix's default `{DEFAULT_SAMPLER}` was tuned only on mixtures this benchmark does not "
            "use (benchmarks/tune_grid.py)."]
    return "\n".join(out) + "\n"


def full_table(dist, nfes, rows) -> str:
    out = [f"#### {dist}: every configuration", "",
           "| library | method | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|---|" + "---|" * len(nfes)]
    for lib, m in dict.fromkeys((r[0], r[1]) for r in rows):
        cells = []
        for k in nfes:
            r = next(r for r in rows if r[0] == lib and r[1] == m and r[2] == k)
            used = "" if r[3] == k else f" ({r[3]})"
            cells.append("n/a" if r[4] != r[4] else f"{r[4]:.4f} / {r[5]:.3f} / {r[6]:+.2f}{used}")
        out.append(f"| {lib} | {m} | " + " | ".join(cells) + " |")
    out += ["", "Cells: SW2 / mode-weight TV / log-density gap; (k) = NFE actually used when below the budget "
            "(Heun-type samplers spend 2 calls per step; n/a = diverged or cannot run at that budget)."]
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--nfe", type=int, nargs="+", default=[3, 4, 5, 10, 20])
    ap.add_argument("--dist", nargs="+", default=list(DISTS), choices=list(DISTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--unmix-only", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the markdown tables here (and the rows as .json)")
    ap.add_argument("--smoke", action="store_true", help="N = 200 at NFE 3, written to a temporary folder (CI)")
    args = ap.parse_args()
    if args.smoke:
        with tempfile.TemporaryDirectory() as tmp:
            args.n, args.nfe, args.out = 200, [3], Path(tmp) / "sampler_benchmark.md"
            return run(args)
    run(args)


def run(args) -> None:
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    results = {dist: bench(dist, args.n, args.nfe, not args.unmix_only) for dist in args.dist}
    minutes = (time.perf_counter() - t0) / 60
    header = (f"Measured {date.today()} on {machine()}, {args.threads} thread(s), float64 exact denoisers; the run "
              f"took {minutes:.0f} min.\nCommand: `python benchmarks/samplers.py {' '.join(sys.argv[1:])}`\n\n")
    text = header + "".join(summary(d, args.n, args.nfe, *results[d]) + "\n" for d in args.dist)
    text += "".join(full_table(d, args.nfe, results[d][1]) + "\n" for d in args.dist)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        raw = {d: {"floor": f, "rows": r} for d, (f, r) in results.items()}
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
