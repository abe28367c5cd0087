"""The copy check (unmix.metrics.copies, unmix.metrics.nearest): copies flagged, exact or moved by a pixel; real
pictures never trained on not flagged; PSNR by hand; the search equal to brute force; `unmix audit` and
`unmix eval` from the command line; `unmix info` naming a checkpoint that reproduces its training set."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hostile_fixtures import assert_one_error, cli
from PIL import Image

from unmix.data import load_dataset
from unmix.metrics import copies
from unmix.metrics.copies import FLOOR_MSE, build_index, check_copies, copy_index, is_copy, psnr
from unmix.metrics.nearest import _views, centre, search


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _digits():
    return load_dataset("digits").batch(torch.arange(1797))[0]


def _split(x, held=180):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[order[held:]], x[order[:held]]


def _moved(x, dx=1):
    """Moved right by dx pixels, the far column wrapping round (not the distance's own edge rule)."""
    return torch.roll(x, dx, dims=-1)


def test_exact_and_moved_copies_are_flagged_and_unseen_real_digits_are_not():
    train, held = _split(_digits())
    picks = train[torch.arange(0, 300, 3)]
    check = check_copies(torch.cat([picks, _moved(picks), _moved(picks.transpose(-1, -2)).transpose(-1, -2), held]),
                         train)
    flagged = is_copy(check.near)
    assert flagged[:100].all() and flagged[100:300].float().mean() >= 0.97  # exact; moved right; moved down
    assert flagged[300:].float().mean() <= 0.05  # digits never trained on: new pictures
    assert check.reference_kind == "leave-one-out" and check.figures()["reference_share"] <= 0.05
    f = check_copies(held, train, heldout=held).figures()
    assert f["reference"] == "held-out" and f["share"] == f["reference_share"] and f["n"] == 180


def test_copies_of_larger_pictures_use_the_bound_and_stay_exact():
    """32 px pictures (more numbers than the bound's subspace): the pruned search equals brute force."""
    train = F.interpolate(_digits()[:600], size=32, mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(1)
    queries = torch.cat([train[:20], _moved(train[20:40]), (train[40:80] + 0.2 * torch.randn(40, 1, 32, 32,
                                                                                              generator=g)).clamp(-1, 1)])
    index = build_index(train)
    assert index.basis is not None and index.basis.shape == (30 * 30, 256)  # the 32 px centre, less 1 px a side
    near = index.search(queries)
    views = _views(queries, 1).double()
    brute = torch.cdist(views.flatten(0, 1), centre(index.pictures).double()).square().view(80, 9, -1).amin(1)
    best = brute.topk(2, largest=False)
    assert torch.equal(best.indices[:, 0], near.nearest)
    assert torch.allclose(best.values / 900, torch.stack([near.mse1, near.mse2], 1).double(), atol=1e-6)
    assert is_copy(near)[:40].all() and not is_copy(near)[40:].any()


def test_psnr_and_the_ratio_by_hand():
    train = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1).expand(3, 1, 4, 4)  # three flat pictures
    queries = torch.tensor([0.1, 0.5, 1.0]).view(3, 1, 1, 1).expand(3, 1, 4, 4)
    near = search(train, queries)
    assert near.nearest[0] == 1 and near.nearest[2] == 2  # 0.5 is as near to 0 as to 1
    assert near.mse1.tolist() == pytest.approx([0.01, 0.25, 0.0], abs=1e-6)
    assert near.mse2.tolist() == pytest.approx([0.81, 0.25, 1.0], abs=1e-6)
    assert near.ratio.tolist() == pytest.approx([0.1 / 0.9, 1.0, 0.0], abs=1e-5)
    assert is_copy(near).tolist() == [True, False, True]
    assert psnr(near).tolist() == pytest.approx([10 * math.log10(4 / 0.01), 10 * math.log10(16),
                                                 10 * math.log10(4 / FLOOR_MSE)], abs=1e-3)
    assert 10 * math.log10(4 / FLOOR_MSE) == pytest.approx(58.92, abs=0.01)  # an exact copy, not infinity
    f = copies.figures(near)
    assert f["share"] == pytest.approx(2 / 3) and f["nearest_psnr"] == pytest.approx(10 * math.log10(4 / 0.01))


def test_duplicates_do_not_hide_a_copy_and_the_index_is_cached(tmp_path):
    train, _ = _split(_digits())
    doubled = torch.cat([train, train[:50]])  # 50 pictures twice: their second-nearest would be themselves
    first = copy_index(doubled)
    assert len(first.pictures) == len(torch.unique(train.flatten(1), dim=0))
    assert is_copy(first.search(train[:50])).all()
    files = list((tmp_path / "cache" / "unmix" / "metrics").glob("copies-*.safetensors"))
    assert len(files) == 1
    again = copy_index(doubled)
    assert torch.equal(again.reference.mse1, first.reference.mse1) and torch.equal(again.items, first.items)


def test_the_sheet_puts_the_worst_samples_beside_their_nearest():
    train, held = _split(_digits())
    check = check_copies(torch.cat([held[:10], train[:3]]), train)
    assert set(check.worst(3).tolist()) == {10, 11, 12}
    sheet = check.sheet(4, per_row=2)
    assert sheet.size == (4 * (64 + 2) + 2, 2 * (64 + 2) + 2)  # 2 pairs a row, digits at 8x
    cases = check.cases(3)
    assert all(c["copy"] and c["psnr"] > 58 for c in cases)


# -- the command line -------------------------------------------------------------------------------------------
def test_audit_a_npy_and_a_folder_end_to_end(tmp_path, capsys):
    train = _digits()
    samples = tmp_path / "s.npy"
    np.save(samples, torch.cat([train[:20], -torch.ones(20, 1, 8, 8)]).numpy()[:, 0])  # NHW
    code, out, err = cli(capsys, "audit", samples, "--against", "digits", "--out", tmp_path / "worst.png",
                         "--json", tmp_path / "r.json", "--worst", "4")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("copies:     50.0% of 40 samples") and lines[1].startswith("reference:  ")
    assert Image.open(tmp_path / "worst.png").size == (8 * 66 + 2, 66 + 2)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["share"] == 0.5 and len(saved["worst"]) == 4 and saved["worst"][0]["copy"]

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i in range(6):  # as `unmix sample` writes them: enlarged 8x, beside a grid of another size
        Image.fromarray(((train[i, 0].numpy() + 1) * 127.5).round().astype(np.uint8)).resize(
            (64, 64), Image.NEAREST).save(folder / f"{i:04d}.png")
    Image.new("L", (100, 100)).save(folder / "grid.png")
    code, out, err = cli(capsys, "audit", folder, "--against", "digits", "--json", tmp_path / "f.json")
    assert code == 0, err
    assert "skipped 1 image(s)" in err and "grid.png" in err
    assert out.startswith("copies:     100.0% of 6 samples")
    assert json.loads((tmp_path / "f.json").read_text())["worst"][0]["sample"].endswith(".png")


def test_audit_bad_inputs_give_one_line_and_exit_2(tmp_path, capsys):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((4, 1, 8, 8), np.float32))
    colour = tmp_path / "colour.npy"
    np.save(colour, np.random.default_rng(0).uniform(-1, 1, (4, 3, 8, 8)).astype(np.float32))
    small = tmp_path / "small.npy"
    np.save(small, np.zeros((4, 1, 5, 5), np.float32))
    flat = tmp_path / "flat.npy"
    np.save(flat, np.zeros((4, 64), np.float32))
    pixels = tmp_path / "pixels.npy"
    np.save(pixels, np.full((4, 1, 8, 8), 200, np.float32))
    (tmp_path / "empty").mkdir()
    cases = [
        (("audit", tmp_path / "missing.npy", "--against", "digits"), ["missing.npy", "does not exist"]),
        (("audit", good, "--against", "cifar"), ["cifar"]),
        (("audit", good, "--against", "moons"), ["not pictures"]),
        (("audit", colour, "--against", "digits"), ["3 channels"]),
        (("audit", small, "--against", "digits"), ["5x5"]),
        (("audit", flat, "--against", "digits"), ["NCHW"]),
        (("audit", pixels, "--against", "digits"), ["pixel values"]),
        (("audit", tmp_path / "empty", "--against", "digits"), ["no images"]),
        (("audit", good, "--against", "digits", "--out", tmp_path / "x.jpg"), [".png"]),
        (("audit", good), ["--against"]),
    ]
    for args, words in cases:
        assert_one_error(*cli(capsys, *args)[::2], *words)


def _tiny_digits(out, **net):
    from unmix.training.config import TrainConfig
    from unmix.training.trainer import start

    cfg = TrainConfig(data="digits", steps=1, batch_size=8, out=str(out), threads=1, sample_every=10**6,
                      checkpoint_every=10**6, log_every=10**6, warmup_steps=1, nfe=2,
                      net={"channels": 8, "channel_mult": [1], "num_res_blocks": 1, "attn_levels": [], **net})
    return start(cfg).train(progress=False).checkpoint


def test_eval_of_a_checkpoint_prints_the_copy_lines(tmp_path, capsys):
    ckpt = _tiny_digits(tmp_path / "run")
    code, out, err = cli(capsys, "eval", ckpt, "--n", 80, "--nfe", 2, "--json", tmp_path / "m.json")
    assert code == 0, err
    copies_line = [line for line in out.splitlines() if line.startswith("copies:")]
    assert len(copies_line) == 1 and "of 80 samples" in copies_line[0] and "dB" in copies_line[0]
    assert any(line.startswith("reference:") and "leave-one-out" in line for line in out.splitlines())
    saved = json.loads((tmp_path / "m.json").read_text())["copies"]
    assert saved["n"] == 80 and 0 <= saved["share"] <= 1 and saved["reference"] == "leave-one-out"


def test_info_says_when_a_checkpoint_reproduces_its_training_set(tmp_path, capsys):
    copier = _tiny_digits(tmp_path / "copier", neighbours=True, neighbours_leave_out=0.0)
    code, out, _ = cli(capsys, "info", copier)
    assert code == 0 and "copying      reproduces its training set" in out and "privacy      holds" in out
    learner = _tiny_digits(tmp_path / "learner", neighbours=True, neighbours_leave_out=1.0)
    code, out, _ = cli(capsys, "info", learner)
    assert code == 0 and "reproduces its training set" not in out and "privacy      holds" in out
