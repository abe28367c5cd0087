"""The swiss roll's thickness parameter: the data, its closed-form density and the 2015 comparison's units agree.

The swiss-roll benchmark compares held-out log-likelihoods with Sohl-Dickstein et al. 2015 on rolls of
several thicknesses, and uses unmix.metrics.toys's density as the ceiling; these tests check that the
ceiling is right for thin rolls (where too few mixture nodes would make it lumpy) and scales as it must.
"""
import math

import pytest
import torch

from unmix.data.toys import NOISE, load_toy
from unmix.errors import UnmixError
from unmix.metrics.toys import toy_mixture

LN2 = math.log(2)


def thin_roll_entropy(noise: float) -> float:
    """Differential entropy (nats) of the roll for noise much thinner than its curvature radius (>= 0.3).

    t ~ U(1.5 pi, 4.5 pi) puts density 1 / (3 pi |c'(t)|) on arc length, |c'(t)| = sqrt(1 + t^2) / 15,
    and the blur adds a 1-D Gaussian across the curve: h = log(3 pi) + E log|c'(t)| + log(2 pi e s^2) / 2."""
    t = 1.5 * math.pi * (1 + 2 * (torch.arange(100_000, dtype=torch.float64) + 0.5) / 100_000)
    speed = (1 + t**2).sqrt() / 15
    return math.log(3 * math.pi) + float(speed.log().mean()) + 0.5 * math.log(2 * math.pi * math.e * noise**2)


def standardised_bits(noise: float, n: int = 1000) -> float:
    """Mean true log-density (bits) of a held-out draw, in the unit-variance coordinates of the training draw."""
    std = load_toy("swissroll", noise=noise).data.double().std(0)
    held = load_toy("swissroll", n=n, seed=1, noise=noise).data.double()
    return float((toy_mixture("swissroll", noise).log_prob(held) + std.log().sum()).mean()) / LN2


def test_default_noise_leaves_the_datasets_and_densities_unchanged():
    for name in NOISE:
        assert torch.equal(load_toy(name).data, load_toy(name, noise=NOISE[name]).data)
        assert torch.equal(toy_mixture(name).means, toy_mixture(name, NOISE[name]).means)
    thin = load_toy("swissroll", noise=0.001).data
    assert not torch.equal(thin, load_toy("swissroll").data)
    with pytest.raises(UnmixError, match="noise must be positive"):
        load_toy("swissroll", noise=0)
    with pytest.raises(UnmixError, match="noise must be positive"):
        toy_mixture("swissroll", -0.01)


def test_a_thin_roll_standardises_to_unit_variance_with_its_training_statistics():
    train = load_toy("swissroll", noise=0.001).data.double()
    held = load_toy("swissroll", n=4000, seed=1, noise=0.001).data.double()
    mean, std = train.mean(0), train.std(0)
    y = (held - mean) / std
    assert torch.allclose(y.mean(0), torch.zeros(2, dtype=y.dtype), atol=0.05)
    assert torch.allclose(y.var(0), torch.ones(2, dtype=y.dtype), atol=0.06)
    # the roll's extent does not depend on its thickness, so neither do the statistics (to the noise's order)
    assert torch.allclose(std, load_toy("swissroll").data.double().std(0), atol=0.01)


@pytest.mark.parametrize("noise", [0.001, 0.003])
def test_the_closed_form_density_matches_the_thin_roll_entropy(noise):
    data = load_toy("swissroll", n=1000, seed=2, noise=noise).data.double()
    logp = toy_mixture("swissroll", noise).log_prob(data)
    sem = float(logp.std()) / math.sqrt(len(logp))
    assert float(logp.mean()) == pytest.approx(-thin_roll_entropy(noise), abs=4 * sem + 0.01)


def test_a_mixture_with_too_few_nodes_would_fail_the_entropy_check():
    """The check above has teeth: the default roll's 1024 nodes, blurred only by 0.001, is lumpy."""
    coarse = toy_mixture("swissroll")
    lumpy = type(coarse)(coarse.weights, coarse.means, torch.full_like(coarse.variances, 0.001**2))
    data = load_toy("swissroll", n=1000, seed=2, noise=0.001).data.double()
    assert abs(float(lumpy.log_prob(data).mean()) + thin_roll_entropy(0.001)) > 0.5


def test_halving_the_noise_adds_a_bit_and_thin_rolls_pass_the_2015_bound():
    k = {s: standardised_bits(s) for s in (0.02, 0.002, 0.001)}
    assert k[0.02] < 0 < 2.35 < k[0.001]  # unmix's default roll cannot reach 2.35 bits; a thin one can
    assert k[0.001] - k[0.002] == pytest.approx(1.0, abs=0.1)  # thin rolls: K = const - log2(noise)
