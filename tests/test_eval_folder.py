"""evaluate(samples, "folder:PATH"): a feature space trained on the folder itself ranks real < noisy < blurred.

The folders are written here as PNGs: scikit-learn's digits with class subfolders (greyscale, labelled), and
rendered shapes in colour without subfolders (the contrastive network alone). Samples are a held-out half
drawn the same way, so "real" is not a copy of the reference set.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from unmix.data.digits import digits_images
from unmix.data.folder import load_folder
from unmix.errors import UnmixError
from unmix.metrics import evaluate, features
from unmix.metrics.cache import metrics_dir
from unmix.store.files import read_metadata

N = 300  # images in each folder, and in each held-out set


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder, so each network is trained here exactly as a fresh user would get it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


def _write_digits(root, idx, labelled: bool):
    images, labels = digits_images()
    for i in idx.tolist():
        folder = root / str(int(labels[i])) if labelled else root
        folder.mkdir(parents=True, exist_ok=True)
        pixels = ((images[i, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:04d}.png")


def _write_shapes(root, n: int, seed: int):
    """Discs, squares and triangles of random colour, size, place and turn, drawn at 48 px (read back at 12)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    for i in range(n):
        img = Image.new("RGB", (48, 48), tuple(int(v) for v in rng.integers(0, 100, 3)))
        r = rng.uniform(10, 17)
        cx, cy = rng.uniform(r, 48 - r, 2)
        fill = tuple(int(v) for v in rng.integers(130, 256, 3))
        corners, turn = [0, 4, 3][i % 3], rng.uniform(0, 2 * math.pi)
        if corners == 0:
            ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        else:
            angles = [turn + 2 * math.pi * k / corners for k in range(corners)]
            points = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
            ImageDraw.Draw(img).polygon(points, fill=fill)
        img.save(root / f"{i:04d}.png")


def _images(folder, size):
    ds = load_folder(str(folder), size)
    return ds.batch(torch.arange(len(ds)))[0]


def _noisy(x, std):
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)


def _blurred(x, s):
    """Gaussian blur of std s pixels, per channel, edges repeated."""
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * s * s))
    k = (k[:, None] * k[None, :]) / k.sum() ** 2
    c = x.shape[1]
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k.expand(c, 1, 7, 7), groups=c)


def _assert_ranks(data, real):
    results = {name: evaluate(x, data) for name, x in
               (("real", real), ("noisy", _noisy(real, 0.4)), ("blurred", _blurred(real, 1.0)))}
    fd = {k: r["fd"] for k, r in results.items()}
    kid = {k: r["kid"] for k, r in results.items()}
    assert fd["real"] < fd["noisy"] < fd["blurred"], fd
    assert fd["noisy"] > 1.5 * fd["real"], fd  # a margin, not a tie broken by sampling noise
    assert kid["real"] < kid["noisy"] < kid["blurred"], kid
    assert results["real"]["recall"] > results["blurred"]["recall"], results
    return results


def test_labelled_folder_ranks_real_noisy_blurred(cache, tmp_path):
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    _write_digits(tmp_path / "train", perm[:N], labelled=True)
    _write_digits(tmp_path / "held", perm[N:2 * N], labelled=False)
    data = f"folder:{tmp_path / 'train'}"
    _assert_ranks(data, _images(tmp_path / "held", 8))
    (net_file,) = metrics_dir().glob("folder-*-8px-featnet-v1.safetensors")
    meta = read_metadata(net_file)
    assert meta["objective"] == "contrastive + 10 classes"
    assert float(meta["val_accuracy"]) > 0.8  # the class head learned the digits (chance: 0.1)


def test_unlabelled_colour_folder_ranks_real_noisy_blurred_and_reuses_its_cache(cache, tmp_path, monkeypatch):
    _write_shapes(tmp_path / "train", N, seed=0)
    _write_shapes(tmp_path / "held", N, seed=1)
    data = f"folder:{tmp_path / 'train'}"
    real = _images(tmp_path / "held", 12)
    first = _assert_ranks(data, real)
    (net_file,) = metrics_dir().glob("folder-*-12px-featnet-v1.safetensors")
    meta = read_metadata(net_file)
    assert meta["objective"] == "contrastive" and "val_accuracy" not in meta
    assert float(meta["val_retrieval"]) > 0.3  # finds an image's other view among 60 (chance: 1/60)

    def no_training(*args, **kwargs):
        raise AssertionError("the cached network should have been used")

    monkeypatch.setattr(features, "train_folder_net", no_training)
    assert evaluate(real, data) == first["real"]


def test_folder_errors_are_one_clear_sentence(cache, tmp_path):
    _write_digits(tmp_path / "few", torch.arange(20), labelled=False)
    with pytest.raises(UnmixError, match="holds 20 images; its feature statistics need at least 65"):
        evaluate(torch.zeros(100, 1, 8, 8), f"folder:{tmp_path / 'few'}")
    with pytest.raises(UnmixError, match="not square images"):
        evaluate(torch.zeros(100, 1, 8, 6), f"folder:{tmp_path / 'few'}")
    with pytest.raises(UnmixError, match="does not exist"):
        evaluate(torch.zeros(100, 1, 8, 8), f"folder:{tmp_path / 'missing'}")
