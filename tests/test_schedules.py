import math

import pytest
import torch

from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule, karras_sigmas, loglinear_sigmas, sigma_grid


def test_linear_schedule_closed_form():
    s = DiscreteSchedule.linear()
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    torch.testing.assert_close(s.alphas_cumprod, ab, rtol=0, atol=1e-15)
    torch.testing.assert_close(s.sigmas, ((1 - ab) / ab).sqrt(), rtol=1e-14, atol=0)
    assert s.sigma_max == pytest.approx(math.sqrt((1 - ab[-1]) / ab[-1]))


def test_cosine_schedule_closed_form():
    s = DiscreteSchedule.cosine()
    t = torch.arange(1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    ab = f[1:] / f[0]
    # unclipped region equals the formula; the clipped tail has betas exactly 0.999
    clipped = s.betas >= 0.999
    assert clipped.sum() >= 1 and torch.all(s.betas <= 0.999)
    first = int(clipped.nonzero()[0])
    torch.testing.assert_close(s.alphas_cumprod[:first], ab[:first], rtol=1e-12, atol=0)


def test_schedules_match_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for ours, theirs in [
        (DiscreteSchedule.linear(), diffusers.DDPMScheduler(beta_schedule="linear")),
        (DiscreteSchedule.cosine(), diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")),
    ]:
        torch.testing.assert_close(ours.alphas_cumprod.float(), theirs.alphas_cumprod, rtol=2e-5, atol=1e-7)


def test_timestep_sigma_maps():
    s = DiscreteSchedule.linear()
    t = torch.tensor([0.0, 1.0, 17.0, 999.0])
    torch.testing.assert_close(s.t_to_sigma(t), s.sigmas[t.long()], rtol=1e-14, atol=0)
    # half-way is the geometric mean (log-sigma interpolation)
    mid = s.t_to_sigma(torch.tensor(10.5))
    assert float(mid) == pytest.approx(math.sqrt(s.sigmas[10] * s.sigmas[11]), rel=1e-12)
    tt = torch.linspace(0, 999, 777, dtype=torch.float64)
    torch.testing.assert_close(s.sigma_to_t(s.t_to_sigma(tt)), tt, rtol=0, atol=1e-9)
    # out-of-table sigmas clamp to the ends
    assert float(s.sigma_to_t(1e-9)) == 0 and float(s.sigma_to_t(1e9)) == 999
    with pytest.raises(UnmixError):
        s.t_to_sigma(1000.0)


def test_karras_grid():
    g = karras_sigmas(10, 0.002, 80.0, 7.0)
    assert len(g) == 11 and g[-1] == 0
    assert float(g[0]) == pytest.approx(80) and float(g[-2]) == pytest.approx(0.002)
    assert torch.all(g[:-1] > g[1:])
    # uniform in sigma^(1/rho)
    d = torch.diff(g[:-1] ** (1 / 7))
    torch.testing.assert_close(d, d[0].expand_as(d), rtol=1e-10, atol=0)
    lg = loglinear_sigmas(5, 0.01, 10.0)
    torch.testing.assert_close(torch.diff(lg[:-1].log()), torch.full((4,), math.log(1e-3) / 4, dtype=torch.float64))


def test_grid_errors_name_valid_choices():
    with pytest.raises(UnmixError, match="karras, loglinear"):
        sigma_grid("nope", 10)
    with pytest.raises(UnmixError, match="sigma_min"):
        karras_sigmas(10, 0.0, 80)
    with pytest.raises(UnmixError, match="at least 1"):
        karras_sigmas(0)
