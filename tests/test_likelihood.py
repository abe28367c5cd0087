"""Likelihoods checked against exact densities: the probability-flow ODE and DDPM's variational bound."""
import math

import pytest
import torch

from unmix.analytic import FiniteDataset, GaussianMixture, ring_of_gaussians
from unmix.errors import UnmixError
from unmix.likelihood import (
    bin_halfwidth,
    data_levels,
    discretized_gaussian_log_likelihood,
    ode_bits_per_dim,
    ode_log_likelihood,
    uniform_bits_per_dim,
    vlb_bits_per_dim,
)
from unmix.schedules import DiscreteSchedule

F64 = torch.float64


def _skewed_mixture():
    """Unequal weights, diagonal (anisotropic) components, overlapping modes."""
    return GaussianMixture([0.5, 0.3, 0.2], [[0.0, 0.0], [0.6, -0.3], [-0.5, 0.7]],
                           [[0.04, 0.01], [0.002, 0.02], [0.01, 0.01]])


@pytest.mark.parametrize("mixture", [ring_of_gaussians(), _skewed_mixture()], ids=["ring", "skewed"])
def test_ode_log_likelihood_matches_the_exact_mixture_density(mixture):
    x = mixture.sample(64, generator=torch.Generator().manual_seed(0))
    exact = mixture.log_prob(x)
    ode = ode_log_likelihood(mixture, x, steps=48, dtype=F64)  # 2-D: exact trace
    assert abs(ode.mean() - exact.mean()) < 0.01 * exact.abs().mean()  # within 1% in nats
    assert (ode - exact).abs().max() < 0.05


def test_hutchinson_trace_is_unbiased():
    mixture = GaussianMixture.fit(torch.randn(400, 8, generator=torch.Generator().manual_seed(0)) * 0.3, 4)
    x = mixture.sample(128, generator=torch.Generator().manual_seed(1))
    exact = ode_log_likelihood(mixture, x, steps=24, trace="exact", dtype=F64)
    hutch = ode_log_likelihood(mixture, x, steps=24, trace="hutchinson", dtype=F64,
                               generator=torch.Generator().manual_seed(2))
    sem = (hutch - exact).std() / math.sqrt(len(x))
    assert abs((hutch - exact).mean()) < 4 * sem + 1e-3
    assert float(exact.mean()) == pytest.approx(float(mixture.log_prob(x).mean()), rel=0.01)


def test_dequantised_ode_bits_match_the_exact_density_at_sigma_min():
    mixture = ring_of_gaussians(std=0.2)
    levels = 17
    h = bin_halfwidth(levels)
    x = ((mixture.sample(128, generator=torch.Generator().manual_seed(0)).clamp(-1, 1) + 1) / (2 * h)).round() * 2 * h - 1
    out = ode_bits_per_dim(mixture, x, levels, sigma_min=0.01, steps=48, generator=torch.Generator().manual_seed(5),
                           dtype=F64)
    u = (torch.rand(x.shape, generator=torch.Generator().manual_seed(5), dtype=F64) * 2 - 1) * h
    logp = mixture.log_prob(x + u, sigma=0.01)
    exact = float(-(logp.mean() + 2 * math.log(2 * h)) / (2 * math.log(2)))
    assert out["bits_per_dim"] == pytest.approx(exact, rel=0.01)
    assert out["bits_per_dim"] < uniform_bits_per_dim(levels)


def test_discretised_decoder_sums_to_one_over_the_levels():
    levels = 17
    grid = torch.linspace(-1, 1, levels, dtype=F64)[:, None]
    for mean, std in ((0.3, 0.05), (-0.97, 0.2), (1.4, 0.01), (0.0, 3.0)):
        logp = discretized_gaussian_log_likelihood(grid, torch.full_like(grid, mean), std, bin_halfwidth(levels))
        assert torch.logsumexp(logp, 0) == pytest.approx(0.0, abs=1e-9)
    # far in a tail the log-probability stays finite
    far = discretized_gaussian_log_likelihood(torch.tensor([[0.0]], dtype=F64), torch.tensor([[0.9]], dtype=F64), 0.01, 1 / 16)
    assert torch.isfinite(far).all() and far.item() < -1000


def test_vlb_of_the_memorising_denoiser_is_the_entropy_of_its_dataset():
    """The ideal denoiser of 32 digits is the uniform distribution on them: -log2 P = 5 bits per image."""
    from unmix.data import load_dataset

    x = load_dataset("digits").data[:32]
    out = vlb_bits_per_dim(FiniteDataset(x), x, DiscreteSchedule.linear(), 17, dtype=F64,
                           generator=torch.Generator().manual_seed(0))
    assert all(math.isfinite(out[k]) for k in ("bits_per_dim", "prior", "diffusion", "decoder"))
    assert out["bits_per_dim"] == pytest.approx(math.log2(32) / 64, rel=0.02)
    assert out["bits_per_dim"] == pytest.approx(out["prior"] + out["diffusion"] + out["decoder"])


def test_vlb_prior_term_matches_its_closed_form():
    sched = DiscreteSchedule.linear(50)
    x = torch.zeros(4, 3, dtype=F64)
    out = vlb_bits_per_dim(FiniteDataset(x[:1]), x, sched, 256, dtype=F64)
    ab = float(sched.alphas_cumprod[-1])
    kl = 0.5 * (-ab - math.log1p(-ab))  # KL(N(0, 1 - ab) || N(0, 1)) per dimension
    assert out["prior"] == pytest.approx(kl / math.log(2))


def test_data_levels():
    assert data_levels(torch.zeros(3, 1, 2, 2, dtype=torch.uint8)) == 256
    assert data_levels(torch.linspace(-1, 1, 17).repeat(5)) == 17
    assert data_levels(torch.randn(100, 2)) is None


def test_bad_likelihood_inputs():
    m = ring_of_gaussians()
    x = torch.zeros(4, 2)
    with pytest.raises(UnmixError, match="discrete-time model"):
        vlb_bits_per_dim(m, x, None, 17)
    with pytest.raises(UnmixError, match="valid: small, large"):
        vlb_bits_per_dim(m, x, DiscreteSchedule.linear(), 17, variance="medium")
    with pytest.raises(UnmixError, match="valid: auto, exact, hutchinson"):
        ode_log_likelihood(m, x, trace="approx")
    with pytest.raises(UnmixError, match="sigma_min < sigma_max"):
        ode_log_likelihood(m, x, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(UnmixError, match="at least 2 levels"):
        ode_bits_per_dim(m, x, 1)
