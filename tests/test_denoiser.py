import math

import pytest
import torch
from torch import nn

from unmix.analytic import ring_of_gaussians
from unmix.denoiser import PARAMETERIZATIONS, NetworkDenoiser, preconditioning
from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule


class OracleNet(nn.Module):
    """A 'network' that outputs the exact training target F = (x0_hat - c_skip x) / c_out of a mixture.

    It only sees what a real network sees (c_in x and c_noise) and inverts them, so wrapping it in
    NetworkDenoiser must give back the mixture's exact denoiser for every parameterisation.
    """

    def __init__(self, mixture, parameterization, sigma_data=0.5, schedule=None):
        super().__init__()
        self.m, self.p, self.sd, self.schedule = mixture, parameterization, sigma_data, schedule

    def forward(self, x_in, c_noise, cond=None):
        sigma = self.schedule.t_to_sigma(c_noise.double()) if self.schedule is not None else (4 * c_noise.double()).exp()
        c_skip, c_out, c_in, _ = preconditioning(self.p, sigma, self.sd)
        x = x_in.double() / c_in[:, None]
        return (self.m(x, sigma) - c_skip[:, None] * x) / c_out[:, None]


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("discrete", [False, True])
def test_every_parameterization_recovers_the_exact_denoiser(parameterization, discrete):
    gm = ring_of_gaussians()
    schedule = DiscreteSchedule.linear() if discrete else None
    den = NetworkDenoiser(OracleNet(gm, parameterization, 0.5, schedule), parameterization, 0.5, schedule)
    sigma = torch.tensor([0.02, 0.3, 1.0, 7.0, 60.0], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64) * (1 + sigma[:, None])
    torch.testing.assert_close(den(x, sigma), gm(x, sigma), rtol=1e-9, atol=1e-9)


def test_preconditioning_closed_forms():
    s = torch.tensor([0.5], dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = preconditioning("edm", s, sigma_data=0.5)
    assert float(c_skip) == pytest.approx(0.5) and float(c_out) == pytest.approx(0.5 / math.sqrt(2))
    assert float(c_in) == pytest.approx(1 / (0.5 * math.sqrt(2))) and float(c_noise) == pytest.approx(math.log(0.5) / 4)
    # eps: D = x - sigma * eps ; v: D = alpha * z - sigma_vp * v with z the VP sample
    x, eps, v = torch.randn(3, 4, dtype=torch.float64)
    sig = torch.tensor(2.0, dtype=torch.float64)
    c_skip, c_out, c_in, _ = preconditioning("eps", sig)
    torch.testing.assert_close(c_skip * x + c_out * eps, x - sig * eps)
    alpha, sigma_vp = 1 / (1 + sig**2).sqrt(), sig / (1 + sig**2).sqrt()
    c_skip, c_out, c_in, _ = preconditioning("v", sig)
    torch.testing.assert_close(c_skip * x + c_out * v, alpha * (alpha * x) - sigma_vp * v)
    # discrete eps: c_noise is the DDPM timestep of sigma
    sched = DiscreteSchedule.linear()
    *_, t = preconditioning("eps", sched.sigmas[[10, 500]], schedule=sched)
    torch.testing.assert_close(t, torch.tensor([10.0, 500.0], dtype=torch.float64), rtol=0, atol=1e-9)


def test_network_denoiser_errors():
    with pytest.raises(UnmixError, match="valid: eps, x0, v, edm"):
        NetworkDenoiser(nn.Identity(), "score")
    den = NetworkDenoiser(OracleNet(ring_of_gaussians(), "edm"), "edm")
    with pytest.raises(UnmixError, match="sigma > 0"):
        den(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(UnmixError, match=r"shape \[2\]"):
        den(torch.zeros(2, 2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
