"""Inpainting against the exact answer: a Gaussian mixture's conditional is a re-weighted mixture."""
import pytest
import torch

from unmix.analytic import GaussianMixture
from unmix.errors import UnmixError
from unmix.inpaint import exact_conditional, inpaint
from unmix.metrics.exact import sliced_w2
from unmix.samplers import list_samplers

MASK = torch.tensor([[[False, False], [True, True]]])  # keep the top row of a 1x2x2 image, fill the bottom
SEEN = torch.tensor([[[0.7, 0.7], [0.0, 0.0]]])


def four_clusters(std=0.2):
    """Four clusters in 4-D whose top rows are ambiguous only jointly: the bottom row depends on the top."""
    means = 0.7 * torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1], [-1, 1, -1, 1]])
    return GaussianMixture(torch.full((4,), 0.25), means, torch.full((4, 4), std**2), event_shape=(1, 2, 2))


def bottom_row(x):
    return x.reshape(x.shape[0], 4)[:, 2:]


def test_exact_conditional_is_bayes_rule():
    gm = four_clusters(std=0.6)
    y = torch.tensor([[[0.3, -0.2], [0.0, 0.0]]])
    cond = exact_conditional(gm, y, MASK)
    u = torch.randn(10, 2, dtype=torch.float64)
    joint = gm.log_prob(torch.cat([y.reshape(1, 4)[:, :2].expand(10, 2), u], 1))
    marginal = GaussianMixture(gm.weights, gm.means[:, :2], gm.variances[:, :2]).log_prob(y.reshape(1, 4)[:, :2])
    assert torch.allclose(cond.log_prob(u), joint - marginal)


@pytest.mark.parametrize("sampler", list_samplers())
@pytest.mark.parametrize("method", ["replace", "repaint"])
def test_known_pixels_come_out_exactly(sampler, method):
    y = SEEN.float()
    x = inpaint(four_clusters(), y, MASK, 5, method=method, sampler=sampler, nfe=6, jump=2, repeats=2, seed=0)
    assert x.shape == (5, 1, 2, 2)
    assert torch.equal(x[:, :, 0], y[:, 0].expand(5, 2).reshape(5, 1, 2))
    assert torch.isfinite(x).all()


def test_replace_is_exact_when_the_known_pixels_say_nothing():
    gm = GaussianMixture([1.0], torch.tensor([[0.2, -0.1, 0.4, -0.3]]), torch.tensor([[0.1, 0.2, 0.3, 0.05]]),
                         event_shape=(1, 2, 2))
    n = 3000
    ref = exact_conditional(gm, SEEN, MASK)
    truth = ref.sample(n, torch.Generator().manual_seed(1))
    floor = sliced_w2(truth, ref.sample(n, torch.Generator().manual_seed(2)))
    x = inpaint(gm, SEEN, MASK, n, sampler="heun", nfe=39, seed=0)
    assert sliced_w2(bottom_row(x), truth) < 2 * floor


def test_repaint_is_measurably_closer_than_replacement():
    gm = four_clusters()
    n = 2000
    ref = exact_conditional(gm, SEEN, MASK)
    truth = ref.sample(n, torch.Generator().manual_seed(1))
    floor = sliced_w2(truth, ref.sample(n, torch.Generator().manual_seed(2)))
    replace, used_r = inpaint(gm, SEEN, MASK, n, method="replace", sampler="euler", nfe=400, seed=0, return_nfe=True)
    repaint, used_p = inpaint(gm, SEEN, MASK, n, method="repaint", sampler="euler", nfe=20, jump=1, repeats=10,
                              seed=0, return_nfe=True)
    assert used_p <= used_r  # RePaint wins with fewer calls, not by spending more
    err_replace, err_repaint = sliced_w2(bottom_row(replace), truth), sliced_w2(bottom_row(repaint), truth)
    assert err_repaint < 0.2 * err_replace
    assert err_repaint < 8 * floor


def test_repaint_counts_every_call():
    _, used = inpaint(four_clusters(), SEEN, MASK, 3, method="repaint", sampler="euler", nfe=10, jump=5, repeats=3,
                      seed=0, return_nfe=True)
    # segment 1 (10 levels -> 5): 3 runs of 5 steps + 1 call each to stop above 0; segment 2 into 0 runs once
    assert used == 3 * (5 + 1) + 5


@pytest.mark.parametrize("mask, message", [
    (torch.ones(1, 3, 3, dtype=torch.bool), "does not fit"),
    (torch.ones(1, 2, 2, dtype=torch.bool), "no known pixels"),
    (torch.zeros(1, 2, 2, dtype=torch.bool), "no pixels to fill in"),
])
def test_bad_masks(mask, message):
    with pytest.raises(UnmixError, match=message):
        inpaint(four_clusters(), SEEN, mask, 2, nfe=4)


def test_bad_method_and_repaint_settings():
    with pytest.raises(UnmixError, match="unknown inpainting method"):
        inpaint(four_clusters(), SEEN, MASK, method="blend")
    with pytest.raises(UnmixError, match="jump >= 1"):
        inpaint(four_clusters(), SEEN, MASK, method="repaint", jump=0)
