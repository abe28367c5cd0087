import math

import pytest
import torch

from unmix.analytic import FiniteDataset, GaussianMixture, digits_mixture, ring_of_gaussians
from unmix.errors import UnmixError


def _tweedie(gm, x, sigma):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, sigma).sum(), x)
    s = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return (x + s**2 * grad).detach()


def _random_diag(seed=0, k=5, d=3):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.1
    return GaussianMixture(w / w.sum(), torch.randn(k, d, generator=g, dtype=torch.float64),
                           torch.rand(k, d, generator=g, dtype=torch.float64) * 0.3 + 0.01)


@pytest.mark.parametrize("make", [_random_diag, lambda: ring_of_gaussians(), lambda: digits_mixture()])
@pytest.mark.parametrize("sigma", [0.01, 0.3, 5.0])
def test_denoiser_equals_tweedie(make, sigma):
    gm = make()
    x = torch.randn(64, *gm.event_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x = x * math.sqrt(1 + sigma**2)
    torch.testing.assert_close(gm(x, sigma), _tweedie(gm, x, sigma), rtol=1e-8, atol=1e-9)


def test_per_sample_sigma_matches_shared_sigma_path():
    gm = _random_diag()
    x = torch.randn(50, 3, dtype=torch.float64)
    sig = torch.rand(50, dtype=torch.float64) + 0.05
    per_sample = gm(x, sig)
    one_by_one = torch.cat([gm(x[i : i + 1], sig[i]) for i in range(50)])
    torch.testing.assert_close(per_sample, one_by_one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(per_sample, _tweedie(gm, x, sig), rtol=1e-8, atol=1e-9)


def test_finite_dataset_is_tweedie_and_memorises():
    pts = torch.randn(40, 2, 3, dtype=torch.float64)
    fd = FiniteDataset(pts)
    x = torch.randn(16, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(fd(x, 0.7), _tweedie(fd, x, 0.7), rtol=1e-8, atol=1e-9)
    # at tiny noise the posterior mean is the nearest training point
    near = fd(pts[:5] + 1e-3 * torch.randn(5, 2, 3, dtype=torch.float64), 1e-3)
    torch.testing.assert_close(near, pts[:5], rtol=0, atol=1e-9)
    with pytest.raises(UnmixError, match="sigma > 0"):
        fd.log_prob(x, 0.0)


def test_log_prob_matches_closed_form_and_samples_have_right_moments():
    scipy_stats = pytest.importorskip("scipy.stats")
    gm = _random_diag(3)
    x = torch.randn(20, 3, dtype=torch.float64)
    ref = torch.log(sum(float(gm.weights[k]) * torch.as_tensor(scipy_stats.multivariate_normal(
        gm.means[k].numpy(), (gm.variances[k] + 0.25).numpy()).pdf(x.numpy())) for k in range(5)))
    torch.testing.assert_close(gm.log_prob(x, 0.5), ref, rtol=1e-10, atol=1e-10)
    s = gm.sample(200_000, torch.Generator().manual_seed(0))
    mean = (gm.weights[:, None] * gm.means).sum(0)
    second = (gm.weights[:, None] * (gm.variances + gm.means**2)).sum(0)
    torch.testing.assert_close(s.mean(0), mean, rtol=0, atol=0.01)
    torch.testing.assert_close((s**2).mean(0), second, rtol=0.01, atol=0.01)


def test_class_conditioning_restricts_components():
    gm = ring_of_gaussians()
    s = gm.sample(1000, torch.Generator().manual_seed(0), cond=torch.tensor(2))
    torch.testing.assert_close(s.mean(0), gm.means[2], rtol=0, atol=0.01)
    x = torch.zeros(4, 2, dtype=torch.float64)
    # at large noise a class-conditioned posterior mean is that class's mean
    torch.testing.assert_close(gm(x, 1e-3 * 0 + 50.0, torch.full((4,), 5)), gm.means[5].expand(4, 2), rtol=0, atol=1e-3)
    with pytest.raises(UnmixError, match="label out of range"):
        gm(x, 1.0, torch.full((4,), 9))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(UnmixError, match="does not match the mixture's dimension 2"):
        ring_of_gaussians()(torch.zeros(3, 5), 1.0)
