"""Exact metrics for the 2-D toys: their mixtures match unmix.data.toys, and evaluate() ranks samples correctly."""
import pytest
import torch

from unmix.data.toys import load_toy
from unmix.errors import UnmixError
from unmix.metrics import evaluate, sliced_w2
from unmix.metrics.toys import TOYS, toy_mixture


@pytest.mark.parametrize("name", TOYS)
def test_exact_mixture_matches_the_dataset(name):
    data = load_toy(name, n=4000).data.double()
    other = load_toy(name, n=4000, seed=7).data.double()
    mixture = toy_mixture(name)
    draw = mixture.sample(4000, generator=torch.Generator().manual_seed(3))
    assert sliced_w2(data, draw) < 1.5 * sliced_w2(data, other) + 0.005
    assert float(mixture.log_prob(data).mean()) == pytest.approx(float(mixture.log_prob(draw).mean()), abs=0.05)


def test_evaluate_toys_tells_good_from_bad_samples():
    good = evaluate(load_toy("ring", n=2000, seed=5).data, "ring")
    bad = evaluate(1.2 * load_toy("ring", n=2000, seed=5).data, "ring")
    assert set(good) == {"sliced_w2", "log_density_gap", "log_density", "n"}
    assert abs(good["log_density_gap"]) < 0.1 and good["sliced_w2"] < 0.06
    assert bad["log_density_gap"] > 1 and bad["sliced_w2"] > 2 * good["sliced_w2"]


def test_toy_samples_of_the_wrong_shape_are_refused():
    with pytest.raises(UnmixError, match=r"do not match swissroll items of shape \[2\]"):
        evaluate(torch.zeros(100, 3), "swissroll")
    with pytest.raises(UnmixError, match="too few"):
        evaluate(torch.zeros(1, 2), "moons")
