"""Feature-space metrics on the digits: FD, KID, precision/recall, the cached classifier, atomic cache files,
bad inputs."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from unmix.errors import UnmixError
from unmix.metrics import evaluate, features, frechet_distance, kid, precision_recall
from unmix.store import files as fsutil
from unmix.store.files import cache_dir, read_metadata


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache folder, so the tests build exactly what a fresh user would get (once per session)."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.getbasetemp() / "unmix-cache"
    folder.mkdir(exist_ok=True)
    mp.setenv("XDG_CACHE_HOME", str(folder))
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def ref(cache):
    return features.reference("digits")


@pytest.fixture(scope="module")
def digits():
    return features.image_dataset("digits")


def _blur(x, s):
    r = torch.arange(-2, 3, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * s * s))
    k = k / k.sum()
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), (k[:, None] * k[None, :])[None, None])


def _noise(x, s):
    return (x + s * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)


def test_cache_lives_under_xdg_cache_home(cache, ref):
    assert cache_dir() == cache / "unmix"
    names = sorted(p.name for p in (cache / "unmix" / "metrics").iterdir())
    # the feature net and reference, beside the copy check's index when a test of this file ran it first
    assert {"digits-featnet-v1.safetensors", "digits-reference-v1.safetensors"} <= set(names)
    assert all(n.startswith(("digits-", "copies-")) for n in names), names
    meta = read_metadata(cache / "unmix" / "metrics" / "digits-featnet-v1.safetensors")
    assert float(meta["val_accuracy"]) > 0.95  # a feature space that knows what digits look like


def test_feature_net_training_is_bit_identical_whatever_the_callers_threads(digits):
    first, _ = features.train_feature_net(digits, epochs=1)
    torch.set_num_threads(2)  # the build pins its own thread count
    try:
        second, _ = features.train_feature_net(digits, epochs=1)
    finally:
        torch.set_num_threads(1)
    for (k, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), k


def test_atomic_writes_replace_whole_files_and_leave_nothing_behind(tmp_path):
    target = tmp_path / "a.json"
    fsutil.write_text(target, "old")
    fsutil.write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    with pytest.raises(RuntimeError), fsutil.atomic_path(target) as tmp:  # a writer that dies half-way
        tmp.write_text("half")
        raise RuntimeError
    assert target.read_text(encoding="utf-8") == "new ✓"
    weights = tmp_path / "w.safetensors"
    fsutil.save_safetensors(weights, {"x": torch.arange(6.0).reshape(2, 3).T}, {"k": "v"})  # non-contiguous
    assert torch.equal(load_file(weights)["x"], torch.arange(6.0).reshape(2, 3).T)
    assert read_metadata(weights) == {"k": "v"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "w.safetensors"]
    with pytest.raises(FileNotFoundError):  # folders are made only when asked
        fsutil.write_bytes(tmp_path / "new" / "b.bin", b"x")
    assert fsutil.write_bytes(tmp_path / "new" / "b.bin", b"x", make_parents=True).read_bytes() == b"x"


def test_atomic_folder_replaces_a_whole_folder_or_nothing(tmp_path):
    out = tmp_path / "run"
    with fsutil.atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("1")
    with pytest.raises(RuntimeError), fsutil.atomic_folder(out) as tmp:  # a crash mid-write keeps the old folder
        (tmp / "b.txt").write_text("2")
        raise RuntimeError
    assert [p.name for p in out.iterdir()] == ["a.txt"]
    (tmp_path / ".run.tmp-99999").mkdir()  # left by a writer that died
    with fsutil.atomic_folder(out) as tmp:
        (tmp / "c.txt").write_text("3")
    assert [p.name for p in out.iterdir()] == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_load_safetensors_refuses_missing_corrupt_and_stale_files(tmp_path):
    path = tmp_path / "t.safetensors"
    assert fsutil.load_safetensors(path) is None
    fsutil.save_safetensors(path, {"x": torch.ones(2)}, {"version": "1"})
    assert torch.equal(fsutil.load_safetensors(path, {"version": "1"})["x"], torch.ones(2))
    assert fsutil.load_safetensors(path, {"version": "2"}) is None
    path.write_bytes(path.read_bytes()[:-3])
    assert fsutil.load_safetensors(path) is None


def test_corrupt_cache_is_rebuilt(cache, ref):
    path = cache / "unmix" / "metrics" / "digits-reference-v1.safetensors"
    path.write_bytes(b"not a safetensors file")
    rebuilt = features.reference("digits")
    assert torch.equal(rebuilt.features, ref.features)


def test_fd_of_a_set_with_itself_is_zero(ref):
    assert frechet_distance(ref.features, ref.features) == pytest.approx(0, abs=1e-6)
    assert evaluate(features.image_dataset("digits").images)["fd"] == pytest.approx(0, abs=1e-6)


def test_fd_and_kid_grow_monotonically_with_blur_and_noise(digits):
    for corrupt, levels in ((_blur, [0.5, 0.75, 1.0, 1.5, 2.0]), (_noise, [0.1, 0.2, 0.4, 0.8])):
        results = [evaluate(corrupt(digits.images, s)) for s in levels]
        fds = [r["fd"] for r in results]
        kids = [r["kid"] for r in results]
        assert all(a < b for a, b in zip(fds, fds[1:])), (corrupt.__name__, fds)
        assert all(a < b for a, b in zip(kids, kids[1:])), (corrupt.__name__, kids)


def test_fd_matches_the_closed_form_for_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(20000, 3, generator=g, dtype=torch.float64) + 1
    # N(0, I) vs N(1, 4I): |mu|^2 = 3, trace term 3 * (1 + 4 - 2 * 2) = 3
    assert frechet_distance(a, b) == pytest.approx(6.0, rel=0.03)


def test_kid_equals_the_brute_force_u_statistic_and_is_near_zero_for_two_halves(ref):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randn(20, 4, generator=g, dtype=torch.float64) + 0.5
    k = lambda a, b: (a @ b.T / 4 + 1) ** 3  # noqa: E731
    off = lambda m: (m.sum() - m.diagonal().sum()) / (len(m) * (len(m) - 1))  # noqa: E731
    assert kid(x, y, chunk=7) == pytest.approx(float(off(k(x, x)) + off(k(y, y)) - 2 * k(x, y).mean()))
    perm = torch.randperm(len(ref.features), generator=g)
    half = len(perm) // 2
    same = kid(ref.features[perm[:half]], ref.features[perm[half:]])
    different = kid(ref.features[perm[:half]], ref.features[perm[half:]] * 1.1)
    assert abs(same) < different / 5


def test_precision_and_recall_fall_when_half_the_classes_are_dropped(digits, ref):
    half = features.extract(ref.net, digits.images[digits.labels < 5])
    full = ref.features
    p_full, r_full = precision_recall(full, full)
    assert p_full == r_full == 1.0
    p, r = precision_recall(full, half)  # samples miss half the classes: recall falls, precision holds
    assert r == pytest.approx(0.5, abs=0.05) and p > 0.95
    p, r = precision_recall(half, full)  # half the samples lie off the real manifold: precision falls
    assert p == pytest.approx(0.5, abs=0.05) and r > 0.95
    m = evaluate(digits.images[digits.labels < 5])
    assert m["recall"] < 0.6 and m["precision"] > 0.95


def test_nhw_and_nchw_samples_agree_and_npy_loads(tmp_path, digits):
    x = digits.images[:200]
    path = tmp_path / "s.npy"
    np.save(path, x.squeeze(1).numpy())
    from unmix.metrics.quality import load_samples

    assert evaluate(load_samples(path)) == evaluate(x)


@pytest.mark.parametrize("bad, message", [
    (torch.zeros(100, 1, 16, 16), "do not match digits"),
    (torch.zeros(100, 3, 8, 8), "do not match digits"),
    (torch.zeros(100, 64), "do not match digits"),
    (torch.zeros(10, 1, 8, 8), "too few"),
    (torch.full((100, 1, 8, 8), float("nan")), "NaN"),
    (torch.randint(0, 256, (100, 1, 8, 8)).float(), "pixel values"),
])
def test_bad_samples_give_one_clear_error(bad, message, ref):
    with pytest.raises(UnmixError, match=message):
        evaluate(bad)


def test_unknown_dataset_and_too_few_for_each_metric():
    with pytest.raises(UnmixError, match="valid: digits, emoji"):
        evaluate(torch.zeros(100, 1, 8, 8), data="cifar")
    x = torch.randn(3, 5, dtype=torch.float64)
    with pytest.raises(UnmixError, match="FD needs at least 6"):
        frechet_distance(x, x)
    with pytest.raises(UnmixError, match="KID needs at least 2"):
        kid(x[:1], x)
    with pytest.raises(UnmixError, match="k=3 needs at least 4"):
        precision_recall(x, x)
