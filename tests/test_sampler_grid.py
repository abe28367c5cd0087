"""The default sampler ("auto") and its grid rule (schedules.searched_sigmas), on a mixture no benchmark or
tuning run uses: a 24-D, 7-component diagonal mixture drawn here."""
import math

import pytest
import torch

from unmix.analytic import GaussianMixture, ring_of_gaussians
from unmix.errors import UnmixError
from unmix.metrics.exact import sliced_w2
from unmix.samplers import DEFAULT_SAMPLER, default_sigmas, sample
from unmix.schedules import LOW_DIM, few_step_range, searched_sigmas

N = 4000


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
    assert errs[1] < 0.6 * errs[0] and errs[2] < 0.85 * errs[1], (errs, floor)  # 3 -> 5 -> 10 NFE
    assert max(errs[2:]) < 1.3 * floor, (errs, floor)  # from 10 NFE on within 30% of true-vs-true
    assert tvs[-1] < 0.03 and tvs[-1] < tvs[0], tvs


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
