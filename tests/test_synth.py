"""`synthesize` / `unmix synth`: a labelled class-folder dataset that unmix's folder loader reads back exactly."""
import csv

import pytest
import torch

import unmix
from unmix.apps.synth import labelled_tensors, read_labels, synthesize
from unmix.cli.app import run_app
from unmix.data.folder import load_folder
from unmix.data.images import to_uint8
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.model import Model
from unmix.nets import build_net

TINY = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [1]}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A class-conditional digits model trained for a few steps (seconds at 1 thread)."""
    out = tmp_path_factory.mktemp("run") / "digits"
    return unmix.train("digits", cond="label", steps=20, out=str(out), progress=False, batch_size=32, threads=1,
                       nfe=2, sample_every=10**6, checkpoint_every=10**6, net=TINY)


def test_writes_class_folders_and_labels_that_reproduce(model, tmp_path):
    out = synthesize(model, 3, tmp_path / "syn", guidance=2.0, seed=5, sampler="dpmpp_2m", nfe=4)
    rows = read_labels(out)
    assert len(rows) == 30 and [r["label"] for r in rows] == [c for c in range(10) for _ in range(3)]
    assert len({r["seed"] for r in rows}) == 30
    assert all(r["guidance"] == 2.0 and r["sampler"] == "dpmpp_2m" and r["nfe"] == 4 for r in rows)
    assert all(r["file"].startswith(f"{r['class_name']}/") for r in rows)
    # every row is regenerated from its own seed, label and settings (same pixels after 8-bit rounding)
    again = model.sample(30, seeds=[r["seed"] for r in rows], labels=[r["label"] for r in rows], guidance=2.0,
                         sampler="dpmpp_2m", nfe=4)
    images, labels = labelled_tensors(out)
    assert torch.equal(labels, torch.tensor([r["label"] for r in rows]))
    assert torch.equal(torch.from_numpy(to_uint8(again)), ((images + 1) * 127.5).round().to(torch.uint8).movedim(1, -1))
    # the layout `--data folder:OUT` reads: classes from subfolders, labels.csv ignored
    ds = load_folder(str(out), size=8)
    assert ds.class_names == [str(c) for c in range(10)] and len(ds) == 30
    assert sorted(ds.labels.tolist()) == sorted(r["label"] for r in rows)


def test_more_per_class_keeps_the_first_images(model, tmp_path):
    a = read_labels(synthesize(model, 2, tmp_path / "a", nfe=2))
    b = read_labels(synthesize(model, 4, tmp_path / "b", nfe=2))
    assert {(r["label"], r["seed"]) for r in a} <= {(r["label"], r["seed"]) for r in b}
    for r in a:
        assert (tmp_path / "a" / r["file"]).read_bytes() == (tmp_path / "b" / r["file"]).read_bytes()


def test_refuses_a_non_empty_folder_unless_told(model, tmp_path):
    out = tmp_path / "syn"
    out.mkdir()
    synthesize(model, 1, out, nfe=2)  # an existing empty folder is fine
    with pytest.raises(UnmixError, match="overwrite=True"):
        synthesize(model, 1, out, nfe=2)
    (out / "mine.txt").write_text("keep?")
    synthesize(model, 2, out, nfe=2, overwrite=True)
    assert not (out / "mine.txt").exists() and len(read_labels(out)) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]  # no temporary folders left behind


def test_a_crash_leaves_no_half_written_folder(model, tmp_path):
    out = tmp_path / "syn"

    def crash(done, total):
        if done >= 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        synthesize(model, 2, out, nfe=2, batch_size=4, callback=crash)
    assert list(tmp_path.iterdir()) == []
    synthesize(model, 1, out, nfe=2)
    with pytest.raises(KeyboardInterrupt):  # a crash while overwriting keeps the old folder whole
        synthesize(model, 2, out, nfe=2, batch_size=4, overwrite=True, callback=crash)
    assert len(read_labels(out)) == 10 and sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


def test_a_model_without_labels_is_one_clear_error(tmp_path):
    net = build_net({"kind": "unet", "in_channels": 1, **TINY})
    plain = Model(net, Recipe(), {"name": "digits", "shape": [1, 8, 8], "class_names": []})
    with pytest.raises(UnmixError, match="class-conditional model") as e:
        synthesize(plain, 2, tmp_path / "syn")
    assert "\n" not in str(e.value) and not (tmp_path / "syn").exists()


def test_cli(model, tmp_path, capsys):
    import unmix.cli.synth_cmd  # noqa: F401  registers the command (the CLI's module list does it for users)

    run = str(model.checkpoint)
    out = tmp_path / "syn"
    assert run_app(["synth", run, "--per-class", "2", "--out", str(out), "--nfe", "3", "--guidance", "1",
                    "--seed", "7", "--device", "cpu"]) == 0
    with open(out / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20 and {r["nfe"] for r in rows} == {"3"} and min(int(r["seed"]) for r in rows) == 7
    assert run_app(["synth", run, "--per-class", "1", "--out", str(out)]) == 2  # not empty, no --overwrite
    assert "overwrite" in capsys.readouterr().err
    for bad in (["--per-class", "0"], ["--per-class", "1", "--nfe", "0"], ["--per-class", "1", "--guidance", "-1"]):
        assert run_app(["synth", run, *bad, "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
