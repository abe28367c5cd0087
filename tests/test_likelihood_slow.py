"""A briefly trained DDPM-recipe digits model: its variational bound is finite and beats uniform noise."""
import math

import pytest

from unmix.api import nll
from unmix.likelihood import uniform_bits_per_dim


@pytest.mark.slow
def test_vlb_bits_per_dim_on_digits_is_finite_and_below_the_uniform_baseline(tmp_path):
    from unmix.training.config import TrainConfig
    from unmix.training.trainer import start

    cfg = TrainConfig(data="digits", recipe="ddpm", steps=600, out=str(tmp_path / "run"), threads=1,
                      net=dict(channels=16), sample_every=10**6, checkpoint_every=10**6, log_every=100)
    run = start(cfg).train(progress=False)
    out = nll(run.checkpoint, "vlb", n=64)
    assert out["levels"] == 17 and out["uniform_bits_per_dim"] == uniform_bits_per_dim(17)
    assert all(math.isfinite(out[k]) for k in ("bits_per_dim", "prior", "diffusion", "decoder"))
    assert out["bits_per_dim"] < uniform_bits_per_dim(17), out
