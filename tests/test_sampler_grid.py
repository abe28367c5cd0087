"""The default sampler ("auto") and its grid rules (schedules.searched_sigmas, samplers.pilot_sigmas), on a
mixture no benchmark or tuning run uses: a 24-D, 7-component diagonal mixture drawn here."""
import math

import pytest
import torch

from unmix.analytic import GaussianMixture, ring_of_gaussians
from unmix.errors import UnmixError
from unmix.metrics.exact import sliced_w2
from unmix.samplers import DEFAULT_SAMPLER, PILOT_LEVELS, default_sigmas, pilot_sigmas, sample
from unmix.schedules import LOW_DIM, few_step_range, searched_sigmas

N = 4000
# A batch equals its seeds drawn alone to rounding, not bit for bit: MKL's matmul picks its summation order by the
# number of rows (on AMD EPYC batches of 8 and 2 differ by 1.6e-15, on Intel Xeon batches of 6 and 2 by 1.3e-15).
BATCH_RTOL = 1e-12


@pytest.fixture(scope="module")
def mixture():
    g = torch.Generator().manual_seed(2024)
    w = torch.rand(7, generator=g, dtype=torch.float64) + 0.3
    means = torch.rand(7, 24, generator=g, dtype=torch.float64) * 1.6 - 0.8
    variances = 10 ** (torch.rand(7, 24, generator=g, dtype=torch.float64) * 3 - 3.5)  # std 0.02 .. 0.56
    gm = GaussianMixture(w / w.sum(), means, variances)
    refs = [gm.sample(N, torch.Generator().manual_seed(11 + i)) for i in range(2)]
    floor = sum(sliced_w2(gm.sample(N, torch.Generator().manual_seed(21 + i)), refs[i % 2]) for i in range(4)) / 4
    return gm, refs, floor


def _tv(gm, x):
    scores = torch.stack([gm.log_prob(x, 0.0, cond=torch.tensor(k)) for k in range(len(gm.weights))], 1)
    freq = torch.bincount(scores.argmax(1), minlength=len(gm.weights)).double() / len(x)
    return 0.5 * float((freq - gm.weights).abs().sum())


def test_the_default_sampler_converges_as_the_budget_grows(mixture):
    """Sliced W2 and mode-weight error fall with NFE and reach the true-vs-true floor."""
    gm, refs, floor = mixture
    errs, tvs = [], []
    for nfe in (3, 5, 10, 40):
        x = sample(gm, (N, 24), DEFAULT_SAMPLER, nfe, seed=5, dtype=torch.float64)
        errs.append(sum(sliced_w2(x, r) for r in refs) / len(refs))
        tvs.append(_tv(gm, x))
    assert errs[1] < 0.9 * errs[0] and errs[2] < 0.85 * errs[1], (errs, floor)  # 3 -> 5 -> 10 NFE
    assert max(errs[2:]) < 1.3 * floor, (errs, floor)  # from 10 NFE on within 30% of true-vs-true
    assert tvs[-1] < 0.03 and tvs[-1] < tvs[0], tvs


def test_the_pilot_grid_beats_the_fixed_three_level_grid(mixture):
    """At 3 steps `auto` picks its grid by a pilot run on the denoiser: on this mixture it halves the fixed grid's
    sliced W2 (measured 1.7x the floor against 3.2x) without losing mode weights (TV 0.034 against 0.037)."""
    gm, refs, floor = mixture
    fixed = searched_sigmas(3, dim=24)
    for seed in (5, 6):
        piloted = sample(gm, (N, 24), DEFAULT_SAMPLER, 3, seed=seed, dtype=torch.float64)
        plain = sample(gm, (N, 24), "unipc", 3, sigmas=fixed, seed=seed, dtype=torch.float64)
        err = [sum(sliced_w2(x, r) for r in refs) / len(refs) for x in (piloted, plain)]
        assert err[0] < 0.7 * err[1] and err[0] < 2.2 * floor, (err, floor)
        assert _tv(gm, piloted) < _tv(gm, plain) + 0.01


def _seeds(first, n):
    return [torch.Generator().manual_seed(first + i) for i in range(n)]


def test_the_pilot_grid_is_the_callers_whatever_the_seeds_batch_or_limits(mixture):
    gm = mixture[0]
    grid = pilot_sigmas(gm, (24,), dtype=torch.float64)
    top, middles, lasts = PILOT_LEVELS
    assert len(grid) == 4 and grid[0] == top and float(grid[1]) in middles and float(grid[2]) in lasts
    assert torch.equal(pilot_sigmas(gm, (24,), dtype=torch.float64), grid)  # cached, and the same
    for n in (6, 8):  # the last two seeds alone equal them in a batch, to rounding (see BATCH_RTOL)
        whole, used = sample(gm, (n, 24), DEFAULT_SAMPLER, 3, generator=_seeds(100, n), dtype=torch.float64,
                             return_nfe=True)
        part = sample(gm, (2, 24), DEFAULT_SAMPLER, 3, generator=_seeds(100 + n - 2, 2), dtype=torch.float64)
        assert used == 3  # the pilot's calls are its own, not the budget's
        torch.testing.assert_close(whole[-2:], part, rtol=BATCH_RTOL, atol=BATCH_RTOL)
    limited = pilot_sigmas(gm, (24,), sigma_limits=(0.05, 2.5), dtype=torch.float64)
    assert 0.05 <= float(limited[2]) < float(limited[1]) < float(limited[0]) <= 2.5
    assert pilot_sigmas(gm, (24,), sigma_limits=(1.0, 1.0)) is None  # no 3 distinct levels fit: the table's grid
    with_labels = sample(gm, (6, 24), DEFAULT_SAMPLER, 3, seed=1, cond=torch.zeros(6, dtype=torch.long),
                         dtype=torch.float64)
    assert torch.equal(with_labels, sample(gm, (6, 24), "unipc", 3, sigmas=searched_sigmas(3, dim=24), seed=1,
                                           cond=torch.zeros(6, dtype=torch.long), dtype=torch.float64))


class _CountingGaussian(torch.nn.Module):
    """The exact denoiser of N(0, v I) with v a parameter, counting its calls."""

    def __init__(self):
        super().__init__()
        self.v, self.calls = torch.nn.Parameter(torch.tensor(0.3)), 0

    def forward(self, x, sigma, cond=None):
        self.calls += 1
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        return x * self.v / (self.v + sigma**2)


def test_the_pilot_runs_once_per_denoiser_until_its_weights_change():
    net = _CountingGaussian()
    first = sample(net, (4, 32), DEFAULT_SAMPLER, 3, seed=0)
    pilot_calls = net.calls - 3
    assert pilot_calls > 3
    again = sample(net, (4, 32), DEFAULT_SAMPLER, 3, seed=0)
    assert net.calls == pilot_calls + 6 and torch.equal(first, again)  # cached: only the 3 sampling calls
    with torch.no_grad():
        net.v.add_(0.5)  # new weights: the grid is chosen again
    sample(net, (4, 32), DEFAULT_SAMPLER, 3, seed=0)
    assert net.calls == 2 * pilot_calls + 9


@pytest.mark.parametrize("nfe", [1, 2, 3, 4, 5, 7, 10, 33])
def test_the_default_spends_exactly_its_budget_and_is_deterministic(nfe):
    gm = ring_of_gaussians()
    a, used = sample(gm, (16, 2), DEFAULT_SAMPLER, nfe, generator=torch.Generator().manual_seed(4), return_nfe=True)
    b = sample(gm, (16, 2), DEFAULT_SAMPLER, nfe, generator=torch.Generator().manual_seed(4))
    assert used == nfe and torch.equal(a, b)


def test_auto_is_unipc_on_three_levels_and_ipndm_beyond():
    gm = ring_of_gaussians()
    for nfe, solver in ((3, "unipc"), (4, "ipndm"), (12, "ipndm")):
        grid = default_sigmas(DEFAULT_SAMPLER, nfe, dim=2)
        a = sample(gm, (32, 2), DEFAULT_SAMPLER, nfe, seed=6, dtype=torch.float64)
        b = sample(gm, (32, 2), solver, nfe, sigmas=grid, seed=6, dtype=torch.float64)
        assert torch.equal(a, b), (nfe, solver)


@pytest.mark.parametrize("dim", [None, 2, 64, 3072])
def test_searched_grids_are_valid_for_every_budget(dim):
    for steps in list(range(1, 25)) + [50, 200, 1000]:
        g = searched_sigmas(steps, dim=dim)
        assert g.dtype == torch.float64 and len(g) == steps + 1 and g[-1] == 0
        assert torch.all(g[:-1] > 0) and torch.all(g[:-2] > g[1:-1]), (steps, g)
    assert searched_sigmas(1000, dim=dim)[-2] == pytest.approx(0.002)  # EDM's range at large budgets
    assert float(searched_sigmas(1000, dim=dim)[0]) == pytest.approx(80.0)


def test_dimension_changes_the_grid_only_below_low_dim():
    assert torch.equal(searched_sigmas(3, dim=LOW_DIM), searched_sigmas(3, dim=64))
    assert torch.equal(searched_sigmas(3, dim=None), searched_sigmas(3, dim=64))
    assert not torch.equal(searched_sigmas(3, dim=LOW_DIM - 1), searched_sigmas(3, dim=64))
    lo2, hi2 = few_step_range(5, dim=2)
    lo64, hi64 = few_step_range(5, dim=64)
    assert lo2 < lo64 and hi2 < hi64  # later final denoise, lower start on low-dimensional data
    assert few_step_range(5) == (lo2, hi2)  # dimension unknown: the low range


def test_explicit_ends_map_the_grid_onto_them_in_log_sigma():
    base = searched_sigmas(7, dim=64)
    g = searched_sigmas(7, 0.002, 80.0, dim=64)
    assert float(g[0]) == pytest.approx(80.0) and float(g[-2]) == pytest.approx(0.002)
    t_base = (base[:-1].log() - math.log(base[-2])) / (math.log(base[0]) - math.log(base[-2]))
    t_new = (g[:-1].log() - math.log(0.002)) / (math.log(80.0) - math.log(0.002))
    torch.testing.assert_close(t_new, t_base)  # same relative spacing
    top = searched_sigmas(7, sigma_max=10.0, dim=64)  # one end given: the other stays where the grid put it
    assert float(top[0]) == pytest.approx(10.0) and float(top[-2]) == pytest.approx(float(base[-2]))
    with pytest.raises(UnmixError, match="sigma_min < sigma_max"):
        default_sigmas("auto", 7, 0.05, 0.05)
    with pytest.raises(UnmixError, match="must be > 0"):
        default_sigmas("auto", 7, sigma_min=0.0)
