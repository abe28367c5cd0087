import math

import pytest
import torch

from unmix.errors import UnmixError
from unmix.forward import add_noise, add_noise_ddpm, trajectory, vp_view
from unmix.schedules import DiscreteSchedule

N = 200_000


def test_add_noise_marginal_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    x0 = torch.tensor([[0.5, -1.0]]).expand(N, 2)
    sigma = torch.full((N,), 2.0)
    x = add_noise(x0, sigma, torch.randn(N, 2, generator=g))
    assert torch.allclose(x.mean(0), torch.tensor([0.5, -1.0]), atol=0.02)
    assert torch.allclose(x.std(0), torch.tensor([2.0, 2.0]), atol=0.02)
    assert torch.equal(add_noise(x0[:3], 0.0, torch.ones(3, 2)), x0[:3])  # a scalar sigma broadcasts


def test_ddpm_sample_is_the_vp_view_of_the_sigma_sample():
    sched = DiscreteSchedule.linear()
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    sig = sched.sigmas[t]
    assert torch.allclose(add_noise_ddpm(x0, t, sched, eps), vp_view(add_noise(x0, sig, eps), sig), atol=1e-12)


def test_ddpm_marginal_mean_and_variance():
    sched = DiscreteSchedule.cosine()
    ab = float(sched.alphas_cumprod[300])
    g = torch.Generator().manual_seed(2)
    x0 = torch.full((N, 1), 0.8)
    x = add_noise_ddpm(x0, 300, sched, torch.randn(N, 1, generator=g))
    assert x.mean().item() == pytest.approx(math.sqrt(ab) * 0.8, abs=0.01)
    assert x.var().item() == pytest.approx(1 - ab, abs=0.01)
    with pytest.raises(UnmixError, match="timestep"):
        add_noise_ddpm(x0[:1], 1000, sched, x0[:1])


def test_trajectory_is_a_brownian_path_with_the_right_marginals():
    g = torch.Generator().manual_seed(3)
    sigmas = [0.0, 0.5, 1.0, 3.0]
    x0 = torch.full((N,), -0.3)
    frames = trajectory(x0, sigmas, g)
    assert frames.shape == (4, N)
    assert torch.equal(frames[0], x0)
    for k, s in enumerate(sigmas):
        assert frames[k].mean().item() == pytest.approx(-0.3, abs=0.03)
        assert frames[k].std().item() == pytest.approx(s, abs=0.02)
    d = frames - x0
    for j in range(1, 4):  # Cov(x_j, x_k) = min(sigma_j, sigma_k)^2: increments are independent
        for k in range(1, 4):
            assert (d[j] * d[k]).mean().item() == pytest.approx(min(sigmas[j], sigmas[k]) ** 2, abs=0.05)


def test_trajectory_is_reproducible_and_validates_levels():
    x0 = torch.zeros(2, 1, 4, 4)
    a = trajectory(x0, [0.0, 1.0, 2.0], torch.Generator().manual_seed(5))
    b = trajectory(x0, [0.0, 1.0, 2.0], torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    with pytest.raises(UnmixError, match="non-decreasing"):
        trajectory(x0, [2.0, 1.0])
