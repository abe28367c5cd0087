"""The emoji feature space (a classifier of Unicode groups): built from the rendered font, then FD behaves."""
import pytest
from test_eval_folder import _blurred  # Gaussian blur of std s pixels per channel, edges repeated

from unmix.metrics import evaluate, features
from unmix.store.files import read_metadata


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
    blurred = [evaluate(_blurred(data.images, s), "emoji")["fd"] for s in (0.5, 1.0, 2.0)]
    assert blurred[0] < blurred[1] < blurred[2], blurred
    assert ref.features.shape == (len(data.images), 64)
