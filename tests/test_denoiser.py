import math

import pytest
import torch
from torch import nn

import unmix
from unmix.analytic import ring_of_gaussians
from unmix.denoiser import PARAMETERIZATIONS, NetworkDenoiser, as_denoiser, preconditioning
from unmix.errors import UnmixError
from unmix.schedules import DiscreteSchedule


def table1(parameterization, s, sd=0.5):
    """(c_skip, c_out, c_in) written out from Karras et al. 2022, Table 1 (VP = eps; EDM), plus x0 and v.

    x0: the network predicts x0 itself, from the VP-scaled input. v (Salimans & Ho 2022): with
    alpha = 1/sqrt(1+s^2), sigma_vp = s/sqrt(1+s^2), the network predicts v = alpha eps - sigma_vp x0.
    """
    vp_in = 1 / math.sqrt(1 + s * s)
    return {
        "eps": (1.0, -s, vp_in),
        "x0": (0.0, 1.0, vp_in),
        "v": (1 / (1 + s * s), -s / math.sqrt(1 + s * s), vp_in),
        "edm": (sd * sd / (s * s + sd * sd), s * sd / math.sqrt(s * s + sd * sd), 1 / math.sqrt(s * s + sd * sd)),
    }[parameterization]


class OracleNet(nn.Module):
    """A 'network' that outputs the exact training target F = (x0_hat - c_skip x) / c_out of a mixture.

    It sees only what a real network sees (c_in x and c_noise) and inverts them with the closed-form
    coefficients of `table1`, never with the code under test: wrapping it in NetworkDenoiser gives
    back the mixture's exact denoiser only if the library's scalings equal Table 1.
    """

    def __init__(self, mixture, parameterization, sigma_data=0.5, schedule=None):
        super().__init__()
        self.m, self.p, self.sd, self.schedule = mixture, parameterization, sigma_data, schedule

    def forward(self, x_in, c_noise, cond=None):
        # c_noise: ln(sigma)/4 (EDM, Table 1), or the DDPM timestep whose table entry is sigma
        c = c_noise.double()
        sigma = self.schedule.t_to_sigma(c) if self.schedule is not None else (4 * c).exp()
        out = torch.empty_like(x_in, dtype=torch.float64)
        for i, s in enumerate(sigma.tolist()):
            c_skip, c_out, c_in = table1(self.p, s, self.sd)
            x = x_in[i: i + 1].double() / c_in
            out[i] = (self.m(x, torch.tensor([s], dtype=torch.float64)) - c_skip * x)[0] / c_out
        return out


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("discrete", [False, True])
@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_every_parameterization_recovers_the_exact_denoiser(parameterization, discrete, sigma_data):
    gm = ring_of_gaussians()
    schedule = DiscreteSchedule.linear() if discrete else None
    net = OracleNet(gm, parameterization, sigma_data, schedule)
    den = NetworkDenoiser(net, parameterization, sigma_data, schedule)
    sigma = torch.tensor([0.02, 0.3, 1.0, 7.0, 60.0], dtype=torch.float64)
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * (1 + sigma[:, None])
    torch.testing.assert_close(den(x, sigma), gm(x, sigma), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_preconditioning_equals_table1(parameterization):
    for sd in (0.5, 1.0, 2.0):
        for s in (0.002, 0.1, 0.5, 1.0, 3.0, 80.0):
            got = preconditioning(parameterization, torch.tensor([s], dtype=torch.float64), sigma_data=sd)
            want = table1(parameterization, s, sd)
            for name, g, w in zip(("c_skip", "c_out", "c_in"), got, want):
                assert float(g) == pytest.approx(w, rel=1e-12, abs=1e-15), (parameterization, sd, s, name)
            assert float(got[3]) == pytest.approx(math.log(s) / 4, rel=1e-12)  # c_noise = ln(sigma)/4


def test_x0_parameterization_is_the_network_output_at_vp_scale():
    """x0: D(x, s) = F(x / sqrt(1 + s^2), c_noise), whatever F is: the skip connection is off."""
    seen = {}

    def net(x_in, c_noise, cond=None):
        seen["x_in"], seen["c_noise"] = x_in, c_noise
        return torch.tanh(x_in) * 0.3 + 0.1

    den = NetworkDenoiser(net, "x0")
    x = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
    out = den(x, sigma)
    scaled = x / torch.sqrt(1 + sigma**2)[:, None]
    torch.testing.assert_close(seen["x_in"], scaled, rtol=1e-14, atol=0)
    torch.testing.assert_close(out, torch.tanh(scaled) * 0.3 + 0.1, rtol=1e-14, atol=0)
    torch.testing.assert_close(seen["c_noise"], sigma.log() / 4)


def test_eps_and_v_targets_in_closed_form():
    """eps: D = x - sigma eps.  v: with z = x / sqrt(1 + s^2) the VP sample, D = alpha z - sigma_vp v."""
    g = torch.Generator().manual_seed(2)
    x, eps, v = torch.randn(3, 4, dtype=torch.float64, generator=g)
    sig = torch.tensor(2.0, dtype=torch.float64)
    c_skip, c_out, _, _ = preconditioning("eps", sig)
    torch.testing.assert_close(c_skip * x + c_out * eps, x - sig * eps)
    alpha, sigma_vp = 1 / math.sqrt(5.0), 2 / math.sqrt(5.0)
    c_skip, c_out, _, _ = preconditioning("v", sig)
    torch.testing.assert_close(c_skip * x + c_out * v, alpha * (alpha * x) - sigma_vp * v)


def test_discrete_c_noise_is_the_ddpm_timestep():
    """With a DiscreteSchedule, c_noise is the timestep t whose table entry sqrt((1 - abar_t) / abar_t) is sigma."""
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    table = ((1 - abar) / abar).sqrt()
    sched = DiscreteSchedule.linear()
    *_, t = preconditioning("eps", table[[0, 10, 500, 999]], schedule=sched)
    torch.testing.assert_close(t, torch.tensor([0.0, 10.0, 500.0, 999.0], dtype=torch.float64), rtol=0, atol=1e-9)


def test_network_denoiser_errors():
    with pytest.raises(UnmixError, match="valid: eps, x0, v, edm"):
        NetworkDenoiser(nn.Identity(), "score")
    den = NetworkDenoiser(OracleNet(ring_of_gaussians(), "edm"), "edm")
    with pytest.raises(UnmixError, match="sigma > 0"):
        den(torch.zeros(2, 2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    with pytest.raises(UnmixError, match=r"shape \[2\]"):
        den(torch.zeros(2, 2, dtype=torch.float64), torch.ones(3, dtype=torch.float64))


def test_as_denoiser_takes_two_and_three_argument_callables():
    gm = ring_of_gaussians()
    plain = lambda x, sigma: gm(x, sigma)  # noqa: E731  (k-diffusion's convention)
    x = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    s = torch.full((4,), 0.4, dtype=torch.float64)
    wrapped = as_denoiser(plain)
    torch.testing.assert_close(wrapped(x, s), gm(x, s), rtol=0, atol=0)
    torch.testing.assert_close(wrapped(x, s, None), gm(x, s), rtol=0, atol=0)
    with pytest.raises(UnmixError, match="cannot be conditioned"):
        wrapped(x, s, torch.zeros(4, dtype=torch.long))
    assert as_denoiser(wrapped) is wrapped  # wrapping twice is harmless
    assert as_denoiser(gm) is gm  # D(x, sigma, cond=None) passes through
    three = lambda x, sigma, cond: gm(x, sigma, cond)  # noqa: E731
    assert as_denoiser(three) is three
    net = NetworkDenoiser(OracleNet(gm, "edm"), "edm")
    assert as_denoiser(net) is net

    class Plain:
        event_shape = (2,)

        def __call__(self, x, sigma):
            return gm(x, sigma)

    obj = as_denoiser(Plain())
    assert obj.event_shape == (2,)  # attributes of the wrapped callable stay visible


def test_a_plain_function_samples_like_the_denoiser_it_calls():
    gm = ring_of_gaussians()
    plain = lambda x, sigma: gm(x, sigma)  # noqa: E731
    for name in ("heun", "dpmpp_2m", "ddpm"):
        a = unmix.sample(plain, (16, 2), sampler=name, nfe=7, generator=torch.Generator().manual_seed(5))
        b = unmix.sample(gm, (16, 2), sampler=name, nfe=7, generator=torch.Generator().manual_seed(5))
        assert torch.equal(a, b), name
    with pytest.raises(UnmixError, match="cannot be conditioned"):
        unmix.sample(plain, (4, 2), sampler="euler", nfe=3, seed=0, cond=torch.zeros(4, dtype=torch.long))
