"""Classifier-free guidance on an exact mixture: labels select components, scale 1 is exact, NFE is counted."""
import math

import pytest
import torch

from unmix.analytic import GaussianMixture, ring_of_gaussians
from unmix.errors import UnmixError
from unmix.guidance import DEFAULT_GUIDANCE, ClassifierFreeGuidance, conditioning, num_classes, steer
from unmix.metrics.exact import sliced_w2
from unmix.samplers import sample


def labelled_ring():
    """Eight Gaussians on a circle; components 0..3 are class 0 .. 3, components 4..7 classes 0..3 again."""
    ring = ring_of_gaussians()
    return GaussianMixture(ring.weights, ring.means, ring.variances, labels=torch.arange(8) % 4)


@pytest.mark.parametrize("gm, label", [(ring_of_gaussians(), 3), (labelled_ring(), 2)], ids=["component", "class"])
def test_guidance_one_reproduces_the_label_distribution(gm, label):
    """Component label 3 of the ring: exactly N(mu_3, 0.05^2 I); class 2 of the labelled ring: components 2 and 6."""
    n = 4000
    cond = torch.full((n,), label)
    x = sample(ClassifierFreeGuidance(gm, 1.0), (n, 2), "heun", 99, seed=0, cond=cond)
    ref = gm.sample(n, torch.Generator().manual_seed(1), cond=cond)
    floor = sliced_w2(ref, gm.sample(n, torch.Generator().manual_seed(2), cond=cond))
    assert sliced_w2(x, ref) < 1.5 * floor + 1e-3


def test_scale_zero_is_unconditional_and_scale_one_is_conditional():
    gm = labelled_ring()
    x = torch.randn(16, 2, dtype=torch.float64)
    s = torch.full((16,), 0.7, dtype=torch.float64)
    c = torch.arange(16) % 4
    assert torch.allclose(ClassifierFreeGuidance(gm, 0.0)(x, s, c), gm(x, s))
    assert torch.allclose(ClassifierFreeGuidance(gm, 1.0)(x, s, c), gm(x, s, c))
    w = 3.0
    want = gm(x, s) + w * (gm(x, s, c) - gm(x, s))
    assert torch.allclose(ClassifierFreeGuidance(gm, w)(x, s, c), want)


def test_guided_step_is_one_call_and_interval_limits_it():
    gm = labelled_ring()
    calls = []

    def spy(x, sigma, cond=None):
        calls.append((x.shape[0], float(sigma[0])))
        return gm(x, sigma, cond)

    spy.num_classes = gm.num_classes
    _, nfe = sample(ClassifierFreeGuidance(spy, 2.0, interval=(0.1, 5.0)), (8, 2), "euler", 10, seed=0,
                    cond=torch.zeros(8, dtype=torch.long), return_nfe=True)
    assert nfe == len(calls) == 10
    for rows, sigma in calls:
        assert rows == (16 if 0.1 <= sigma <= 5.0 else 8)


def test_guidance_pushes_towards_the_class():
    ring = ring_of_gaussians(std=0.3)  # classes overlap: at scale 1 many samples are ambiguous
    gm = GaussianMixture(ring.weights, ring.means, ring.variances, labels=torch.arange(8) % 4)
    n = 2000
    cond = torch.full((n,), 1)
    scores = []
    for w in (1.0, 4.0):
        x = sample(ClassifierFreeGuidance(gm, w), (n, 2), "heun", 39, seed=0, cond=cond)
        scores.append(float((gm.log_prob(x, cond=cond) - gm.log_prob(x)).exp().mean()))  # mean P(class | x)
    assert scores[1] > scores[0] + 0.2, scores  # measured: mean P(class | x) 0.58 at scale 1, 0.90 at scale 4


def test_steer_and_conditioning():
    gm = labelled_ring()
    den, cond = conditioning(gm, 6, label=3)
    assert isinstance(den, ClassifierFreeGuidance) and den.scale == DEFAULT_GUIDANCE and cond.tolist() == [3] * 6
    assert conditioning(gm, 6, label=3, guidance=1.5)[0].scale == 1.5
    assert conditioning(gm, 6) == (gm, None)
    assert steer(gm, None) is gm
    assert num_classes(den) == 4
    with pytest.raises(UnmixError, match="needs --label"):
        steer(gm, None, 2.0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(label=4), "outside the model's classes 0..3"),
    (dict(label=-1), "outside the model's classes 0..3"),
    (dict(label=0, guidance=-1.0), "guidance scale must be"),
    (dict(label=0, guidance=math.nan), "guidance scale must be"),
])
def test_bad_label_or_scale(kwargs, message):
    with pytest.raises(UnmixError, match=message):
        conditioning(labelled_ring(), 4, **kwargs)


def test_guidance_on_an_unconditional_model():
    unconditional = lambda x, sigma, cond=None: x  # noqa: E731  (no num_classes anywhere)
    with pytest.raises(UnmixError, match="trained without labels"):
        conditioning(unconditional, 4, guidance=2.0)
    with pytest.raises(UnmixError, match="class-conditional model"):
        ClassifierFreeGuidance(unconditional, 2.0)


def test_guidance_without_a_label_and_labels_out_of_range():
    g = ClassifierFreeGuidance(labelled_ring(), 2.0)
    x, s = torch.zeros(2, 2), torch.ones(2)
    with pytest.raises(UnmixError, match="needs a label"):
        g(x, s)
    with pytest.raises(UnmixError, match="outside the model's classes"):
        g(x, s, torch.tensor([0, 7]))


def test_a_plain_two_argument_denoiser_goes_through_the_wrappers():
    """k-diffusion's D(x, sigma): steer() passes it on, reconstruction-guided inpainting and editing take it,
    and classifier-free guidance refuses it with the library's error (it has no classes), not a TypeError."""
    from unmix.edit import edit
    from unmix.inpaint import inpaint

    gm = GaussianMixture(torch.tensor([0.5, 0.5]), torch.tensor([[0.6, -0.2, 0.1, 0.4], [-0.5, 0.3, -0.6, 0.0]]),
                         torch.full((2,), 0.01), event_shape=(1, 2, 2))
    plain = lambda x, sigma: gm(x, sigma)  # noqa: E731
    shape = (8, 1, 2, 2)
    a = sample(steer(plain, None), shape, "dpmpp_2m", 6, seed=0, dtype=torch.float64)
    assert torch.equal(a, sample(gm, shape, "dpmpp_2m", 6, seed=0, dtype=torch.float64))
    image = gm.means[0].reshape(1, 2, 2)
    mask = torch.tensor([[[True, False], [False, True]]])
    for method in ("guided", "repaint"):
        got = inpaint(plain, image, mask, 4, method=method, nfe=6, seed=1)
        want = inpaint(gm, image, mask, 4, method=method, nfe=6, seed=1)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.testing.assert_close(edit(plain, image, 0.5, 4, nfe=5, seed=2), edit(gm, image, 0.5, 4, nfe=5, seed=2),
                               rtol=0, atol=0)
    with pytest.raises(UnmixError, match="class-conditional model"):
        ClassifierFreeGuidance(plain, 2.0)
