"""SDEdit: strength 0 is the identity, 1 is plain generation, and in between it stays near the input."""
import math

import pytest
import torch

from unmix.analytic import digits_mixture
from unmix.edit import edit, strength_to_sigma
from unmix.errors import UnmixError
from unmix.samplers import sample


@pytest.fixture(scope="module")
def digits():
    return digits_mixture(8)


def test_strength_zero_returns_the_input_unchanged(digits):
    img = digits.sample(1, torch.Generator().manual_seed(0))[0].float()
    out, nfe = edit(digits, img, 0.0, 3, seed=0, return_nfe=True)
    assert nfe == 0 and torch.equal(out, img.expand(3, -1, -1, -1))


def test_strength_one_is_plain_generation(digits):
    img = torch.zeros(1, 8, 8)
    out = edit(digits, img, 1.0, 4, sampler="dpmpp_2m", nfe=8, seed=3)
    assert torch.equal(out, sample(digits, (4, 1, 8, 8), "dpmpp_2m", 8, seed=3))


def test_distance_to_the_input_grows_with_strength(digits):
    img = digits.sample(1, torch.Generator().manual_seed(0))[0].float()
    dist = [float((edit(digits, img, s, 64, nfe=10, seed=1) - img).pow(2).mean()) for s in (0.1, 0.4, 0.7, 1.0)]
    assert dist == sorted(dist)
    assert dist[0] < 0.01


def test_strength_scale():
    assert strength_to_sigma(0) == 0 and strength_to_sigma(1) == 80.0
    assert math.isclose(strength_to_sigma(1e-12), 0.002, rel_tol=1e-6)
    levels = [strength_to_sigma(s / 10) for s in range(11)]
    assert levels == sorted(levels)


@pytest.mark.parametrize("strength", [-0.1, 1.5, math.nan])
def test_strength_outside_unit_interval(digits, strength):
    with pytest.raises(UnmixError, match=r"strength must be in \[0, 1\]"):
        edit(digits, torch.zeros(1, 8, 8), strength)
