import math

import pytest
import torch

from unmix.analytic import FiniteDataset, GaussianMixture, ring_of_gaussians
from unmix.errors import UnmixError
from unmix.metrics.exact import sliced_w2
from unmix.rng import generators_from_seeds
from unmix.samplers import SAMPLERS, default_sigmas, list_samplers, sample
from unmix.schedules import DiscreteSchedule, append_zero

SETS = 8  # errors average over 8 sample sets: one set's mode counts swing its SW2 by +-30%
STOCHASTIC = {"ddpm": {}, "euler_ancestral": {}, "ddim": {"eta": 1.0}, "heun": {"churn": 20.0}}
N = 5000


@pytest.fixture(scope="module")
def ring():
    """The ring mixture, 4 reference sets, and the floor: mean SW2 of fresh true sets against them.

    SW2 between finite sets fluctuates (mode counts are multinomial), so floors and errors are
    averages over several reference sets; true samples score about 0.8-1.3x this floor.
    """
    gm = ring_of_gaussians()
    refs = [gm.sample(N, torch.Generator().manual_seed(100 + i)) for i in range(2)]
    floor = sum(sliced_w2(gm.sample(N, torch.Generator().manual_seed(200 + i)), refs[i % 2]) for i in range(8)) / 8
    return gm, refs, floor


def _sw2(xs, refs):
    return sum(sliced_w2(x, r) for x in xs for r in refs) / (len(xs) * len(refs))


def test_list_samplers_covers_the_required_families():
    names = set(list_samplers())
    assert {"ddpm", "ddim", "euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_3m", "unipc", "ipndm"} <= names


@pytest.mark.parametrize("name", list_samplers())
def test_every_sampler_converges_to_the_true_mixture(ring, name):
    gm, refs, floor = ring
    nfe = 500 if SAMPLERS[name].stochastic or name in ("euler", "ddim") else 100
    xs = sample(gm, (N * SETS, 2), name, nfe, seed=7, dtype=torch.float64).split(N)
    err = _sw2(xs, refs)
    assert err < 1.5 * floor, f"{name}: SW2 {err:.4f} vs floor {floor:.4f}"


@pytest.mark.parametrize("name,opts", [("ddim", {"eta": 1.0}), ("heun", {"churn": 20.0})])
def test_stochastic_options_converge_with_their_noise(ring, name, opts):
    gm, refs, floor = ring
    xs = sample(gm, (N * SETS, 2), name, 500, seed=8, dtype=torch.float64, **opts).split(N)
    assert _sw2(xs, refs) < 1.5 * floor


@pytest.mark.parametrize("name", list_samplers())
def test_sampler_error_shrinks_with_nfe(ring, name):
    gm, refs, floor = ring
    errs = [_sw2([sample(gm, (N, 2), name, k, seed=9, dtype=torch.float64)], refs) for k in (4, 64)]
    assert errs[1] < 0.75 * errs[0], errs  # measured: 64 NFE cut the error to 0.003-0.6x of 4 NFE


@pytest.mark.parametrize("name", list_samplers())
def test_every_sampler_ends_at_sigma_zero(name):
    """On a finite dataset the flow at sigma = 0 sits exactly on training points: only reachable at sigma 0."""
    pts = torch.tensor([[-0.5, 0.25], [0.5, -0.75], [0.0, 0.9]], dtype=torch.float64)
    grid = default_sigmas(name, 12)
    assert grid[-1] == 0 and torch.all(grid[:-1] > 0)
    seen = []
    x = sample(FiniteDataset(pts), (64, 2), name, 12, seed=1, dtype=torch.float64,
               callback=lambda i, s, x, d: seen.append(s))
    dist = torch.cdist(x, pts).min(1).values
    assert float(dist.max()) < 1e-6
    assert min(seen) > 0  # the denoiser is never asked about sigma = 0


@pytest.mark.parametrize("name", list_samplers())
def test_nfe_budget_is_respected_and_reported(name):
    gm = ring_of_gaussians()
    for budget in (1, 2, 5, 10):
        if budget < SAMPLERS[name].min_nfe:
            continue
        _, used = sample(gm, (8, 2), name, budget, seed=0, return_nfe=True)
        assert 1 <= used <= budget


@pytest.mark.parametrize("name", sorted(set(list_samplers()) - set(STOCHASTIC) | {"heun"}))
def test_deterministic_samplers_reproduce_bit_for_bit(name):
    gm = ring_of_gaussians()
    a = sample(gm, (32, 2), name, 10, seed=3)
    b = sample(gm, (32, 2), name, 10, seed=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize("name,opts", [(n, o) for n, o in STOCHASTIC.items()] + [("dpmpp_2m", {})])
def test_batch_equals_single_runs_with_the_same_seeds(name, opts):
    gm = ring_of_gaussians()
    seeds = [11, 12, 13, 14]
    batch = sample(gm, (4, 2), name, 8, generator=generators_from_seeds(seeds), dtype=torch.float64, **opts)
    singles = torch.cat([sample(gm, (1, 2), name, 8, generator=generators_from_seeds([s]), dtype=torch.float64, **opts)
                         for s in seeds])
    torch.testing.assert_close(batch, singles, rtol=0, atol=1e-12)
    other = sample(gm, (4, 2), name, 8, generator=generators_from_seeds([1, 2, 3, 4]), dtype=torch.float64, **opts)
    assert not torch.allclose(batch, other)


def eps_model(denoiser, schedule):
    """The epsilon a DDPM model predicts from the VP sample at timestep t: eps = (x - D(x)) / sigma,
    with x = x_vp sqrt(1 + sigma^2) (closed form, written here rather than imported from benchmarks/)."""

    def model(x_vp, t):
        sigma = schedule.t_to_sigma(torch.as_tensor(t, dtype=torch.float64)).reshape(1).expand(x_vp.shape[0])
        x = x_vp * torch.sqrt(1 + sigma[:, None] ** 2)
        return (x - denoiser(x, sigma)) / sigma[:, None]

    return model


def _eps_setup(diffusers_cls, **kw):
    gm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[0.5, -0.2, 0.1], [-0.4, 0.3, 0.0]]),
                         torch.tensor([[0.04, 0.01, 0.02], [0.02, 0.03, 0.01]]))
    sched = diffusers_cls(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                          clip_sample=False, **kw)
    sched.set_timesteps(50)
    ours = DiscreteSchedule.linear()
    return gm, sched, eps_model(gm, ours), ours


@pytest.mark.parametrize("which", ["ddpm", "ddim0", "ddim_half"])
def test_ddpm_and_ddim_match_diffusers_step_by_step(which):
    diffusers = pytest.importorskip("diffusers")
    if which == "ddpm":
        gm, sched, model, ours = _eps_setup(diffusers.DDPMScheduler)
        name, opts, eta = "ddpm", {}, None
    else:
        gm, sched, model, ours = _eps_setup(diffusers.DDIMScheduler, set_alpha_to_one=True)
        eta = 0.0 if which == "ddim0" else 0.5
        name, opts = "ddim", {"eta": eta}
    ts = sched.timesteps
    sig = ours.sigmas[ts]
    x_vp = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # diffusers, recording the VP sample before each step
    g = torch.Generator().manual_seed(42)
    theirs, x = [], x_vp.clone()
    for t in ts:
        theirs.append(x.clone())
        kw = {"eta": eta} if eta is not None else {}
        x = sched.step(model(x, t), t, x, generator=g, **kw).prev_sample
    theirs.append(x)
    # unmix in sigma units, converted to VP for comparison
    mine = []
    scale = lambda s: 1 / math.sqrt(1 + float(s) ** 2)  # noqa: E731
    out = sample(gm, (6, 3), name, len(ts), sigmas=append_zero(sig), x_init=x_vp / scale(sig[0]),
                 generator=torch.Generator().manual_seed(42), dtype=torch.float64,
                 callback=lambda i, s, xs, d: mine.append(xs * scale(s)), **opts)
    mine.append(out)
    assert len(mine) == len(theirs)
    for i, (a, b) in enumerate(zip(mine, theirs)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5, msg=f"step {i}")


def test_bad_inputs_give_clear_errors():
    gm = ring_of_gaussians()
    with pytest.raises(UnmixError, match="unknown sampler 'nope'; valid: ddpm, ddim"):
        sample(gm, (4, 2), "nope", 10)
    with pytest.raises(UnmixError, match="needs nfe >= 1"):
        sample(gm, (4, 2), "heun", 0)
    with pytest.raises(UnmixError, match="does not match the denoiser's"):
        sample(gm, (4, 3), "euler", 5)
    with pytest.raises(UnmixError, match="sigma_min and sigma_max must be > 0"):
        sample(gm, (4, 2), "euler", 5, sigma_min=0.0)
    with pytest.raises(UnmixError, match="strictly decreasing"):
        sample(gm, (4, 2), "euler", 5, sigmas=torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(UnmixError, match="end at 0"):
        sample(gm, (4, 2), "euler", 5, sigmas=torch.tensor([2.0, 1.0]))
