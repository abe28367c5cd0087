"""The emoji feature space (a classifier of Unicode groups): built from the rendered font, then FD behaves."""
import pytest
import torch
import torch.nn.functional as F

from unmix.metrics import evaluate
from unmix.metrics import features
from unmix.metrics.cache import read_metadata

torch.set_num_threads(1)


def _blur(x, s):
    """Gaussian blur of std s pixels, per channel, edges replicated (no dark frame from zero padding)."""
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * s * s))
    k = (k[:, None] * k[None, :]) / k.sum() ** 2
    c = x.shape[1]
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k.expand(c, 1, 7, 7), groups=c)


@pytest.mark.slow
def test_emoji_feature_space(tmp_path, monkeypatch):
    pytest.importorskip("PIL")
    from unmix.errors import UnmixError

    try:
        data = features.image_dataset("emoji")
    except UnmixError as e:  # the font is a system package; without it there is no emoji dataset
        pytest.skip(str(e))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ref = features.reference("emoji")
    meta = read_metadata(tmp_path / "unmix" / "metrics" / "emoji-featnet-v1.safetensors")
    assert float(meta["val_accuracy"]) > 2 / data.num_classes  # well above chance
    assert evaluate(data.images, "emoji")["fd"] < 1e-6
    print("emoji feature network:", meta)
    blurred = [evaluate(_blur(data.images, s), "emoji")["fd"] for s in (0.5, 1.0, 2.0)]
    assert blurred[0] < blurred[1] < blurred[2], blurred
    assert ref.features.shape == (len(data.images), 64)
