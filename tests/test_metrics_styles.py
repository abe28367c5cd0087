"""The five-style emoji feature space (unmix.metrics.styles) and `unmix eval` against five-style data: held-out real
pictures score high precision and recall, blurred ones and colour blobs do not; FD to the training pictures and to
the held-out ones use equal counts; names that do not parse are one line. The network here is a short-trained one
in a private metrics cache (the real one trains for minutes); tests that need the artwork skip without it."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import unmix.cli.commands  # noqa: F401  (registers the commands)
from unmix.cli.app import run_app
from unmix.data import emoji_sources as src
from unmix.data import emoji_styles as es
from unmix.data import load_dataset
from unmix.errors import UnmixError
from unmix.metrics import cache, evaluate, styles
from unmix.metrics.quality import check_data

TRAIN = "emoji:styles=all:split=train"


def _blurred(x, s=1.0):
    """Gaussian blur of std s pixels, per channel, edges repeated."""
    r = torch.arange(-3, 4, dtype=torch.float32)
    k = torch.exp(-r**2 / (2 * s * s))
    k = (k[:, None] * k[None, :]) / k.sum() ** 2
    return F.conv2d(F.pad(x, (3, 3, 3, 3), mode="replicate"), k.expand(3, 1, 7, 7), groups=3)


def _blobs(n, seed=0):
    """Discs of one random colour each (one to three) on white: colour without any emoji's shape."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    out = torch.ones(n, 3, 32, 32)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            colour = torch.rand(3, 1, 1, generator=g) * 2 - 1
            cy, cx = torch.rand(2, generator=g) * 20 + 6
            disc = ((yy - cy) ** 2 + (xx - cx) ** 2 < (torch.rand(1, generator=g) * 8 + 3) ** 2).float()
            out[i] = out[i] * (1 - disc) + colour * disc
    return out


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """A private metrics cache and a short training (the pictures themselves come from the user's cache)."""
    try:
        src.check_installed(es.STYLE_IDS)
    except UnmixError:
        pytest.skip(f"emoji styles not installed: run `{src.INSTALL}`")
    if not all(es.cache_path(s).is_file() for s in es.STYLE_IDS):
        pytest.skip(f"five-style pictures not drawn yet: run `{src.INSTALL}`")
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("metrics")
    mp.setattr(cache, "metrics_dir", lambda: folder)
    mp.setattr(styles, "EPOCHS", 3)
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def heldout(quick):
    ds = load_dataset("emoji:styles=all:split=heldout")
    return ds.batch(torch.arange(len(ds)))[0]


def test_five_style_names_are_canonical_and_plain_emoji_is_not_five_style():
    assert styles.styles_spec("emoji:styles=twemoji,noto:split=train") == "emoji:styles=noto,twemoji:split=train"
    assert styles.styles_spec("emoji:styles=all") == TRAIN
    assert styles.styles_spec("emoji:split=heldout") == "emoji:styles=noto:split=heldout"
    assert styles.styles_spec("emoji") is None and styles.styles_spec("emoji:styles=noto") is None
    for good in (TRAIN, "emoji:styles=noto:split=train", "emoji", "digits", "folder:x", "ring"):
        check_data(good)
    for bad in ("emoji:styles=bogus:split=train", "emoji:split=test", "emoji:colour=red", "emojis", 3):
        with pytest.raises(UnmixError):
            check_data(bad)


def test_heldout_real_pictures_score_high_and_blurred_pictures_and_blobs_do_not(quick, heldout):
    real = evaluate(heldout, TRAIN)
    assert set(real) == {"fd", "fd_heldout", "kid", "precision", "recall", "n", "heldout_real"}
    assert real["fd_heldout"] == pytest.approx(0, abs=1e-6)  # the held-out pictures are the held-out split
    ref = real["heldout_real"]
    assert ref["n"] == real["n"] == len(heldout) and ref["training_pictures"] > 5 * len(heldout)
    assert ref["fd"] == pytest.approx(real["fd"]) and ref["precision"] == pytest.approx(real["precision"])
    assert min(ref["precision"], ref["recall"]) > 0.6, ref
    blurred = evaluate(_blurred(heldout), TRAIN)
    assert blurred["recall"] < ref["recall"] - 0.2 and blurred["fd"] > 3 * ref["fd"], (blurred, ref)
    assert blurred["fd_heldout"] > 3 * ref["fd"]
    blobs = evaluate(_blobs(200), TRAIN)
    assert blobs["recall"] < ref["recall"] - 0.2 and blobs["fd"] > 3 * ref["fd"], (blobs, ref)
    at_64 = evaluate(F.interpolate(heldout, scale_factor=2, mode="nearest"), TRAIN)  # averaged back to 32 px
    assert at_64["fd"] == pytest.approx(real["fd"], rel=1e-4) and at_64["recall"] == real["recall"]


def test_fd_to_training_and_heldout_pictures_use_equal_counts(quick, heldout):
    ref = styles.style_reference(TRAIN)
    assert len(ref.subset) == len(ref.heldout) == len(heldout) and len(ref.features) > len(ref.subset)
    assert torch.equal(ref.subset, styles.style_reference(TRAIN).subset)  # a fixed draw
    ds = load_dataset(TRAIN)
    copier = evaluate(ds.batch(ref.subset)[0], TRAIN)  # the very training pictures FD is measured against
    assert copier["fd"] == pytest.approx(0, abs=1e-6) and copier["precision"] == 1.0
    assert copier["fd_heldout"] == pytest.approx(copier["heldout_real"]["fd"], rel=1e-6)  # FD is symmetric
    meta = styles.style_net(TRAIN)[1]
    assert meta["data"] == TRAIN and meta["labels"] == "(style, group)" and int(meta["classes"]) == 45
    assert float(meta["val_accuracy"]) > 2 / 45
    names = sorted(p.name for p in quick.iterdir())
    assert f"{styles._slug(TRAIN)}-featnet-v{styles.VERSION}.safetensors" in names, names


def test_eval_cli_on_heldout_pictures_prints_the_reference_line(quick, heldout, tmp_path, capsys):
    samples = tmp_path / "held.npy"
    np.save(samples, heldout[:300].numpy())
    code = run_app(["eval", "--samples", str(samples), "--data", TRAIN, "--json", str(tmp_path / "m.json")])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[0] for line in lines[:6]] == ["fd", "fd_heldout", "kid", "precision", "recall", "n"]
    reference = [line for line in lines if line.startswith("reference (held-out real): fd ")]
    assert len(reference) == 1 and f"{len(heldout)} new real pictures" in reference[0], out
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["data"] == TRAIN and saved["n"] == 300 and saved["heldout_real"]["n"] == len(heldout)


def test_noto_only_five_style_data_has_its_own_feature_space(quick):
    ds = load_dataset("emoji:styles=noto:split=heldout")
    result = evaluate(ds.batch(torch.arange(len(ds)))[0], "emoji:styles=noto:split=train")
    assert result["heldout_real"]["n"] == len(ds) and result["fd_heldout"] == pytest.approx(0, abs=1e-6)
    assert int(styles.style_net("emoji:styles=noto:split=train")[1]["classes"]) == 9  # (noto, group)


@pytest.mark.parametrize("data", ["emoji:styles=bogus:split=train", "emoji:split=test", "emoji:styles"])
def test_a_bad_five_style_name_is_one_line_and_exit_2(tmp_path, capsys, data):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((100, 3, 32, 32), np.float32))
    code = run_app(["eval", "--samples", str(samples), "--data", data])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
