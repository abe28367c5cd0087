"""`unmix eval` and `unmix nll` from the command line: one line per number, JSON, one-line errors with exit 2."""
import json
import pickle

import numpy as np
import pytest

import unmix.cli.commands  # noqa: F401  (registers the commands)
from unmix.cli.app import run_app

TINY_UNET = dict(channels=8, channel_mult=[1], num_res_blocks=1, attn_levels=[])


@pytest.fixture(autouse=True, scope="module")
def cache(tmp_path_factory):
    """The session's private cache folder (shared with test_metrics: the feature network is built once)."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.getbasetemp() / "unmix-cache"
    folder.mkdir(exist_ok=True)
    mp.setenv("XDG_CACHE_HOME", str(folder))
    yield
    mp.undo()


def _train(out, data, recipe, net):
    from unmix.training.config import TrainConfig
    from unmix.training.trainer import start

    cfg = TrainConfig(data=data, recipe=recipe, steps=1, out=str(out), threads=1, net=net, sample_every=10**6,
                      checkpoint_every=10**6, log_every=10**6, warmup_steps=1)
    return start(cfg).train(progress=False).checkpoint


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory):
    """A one-step DDPM digits model: untrained, but a real checkpoint."""
    return _train(tmp_path_factory.mktemp("digits"), "digits", "ddpm", TINY_UNET)


@pytest.fixture(scope="module")
def ring_ckpt(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("ring"), "ring", "edm", dict(hidden=16, depth=1))


def _run(capsys, *argv):
    code = run_app(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(code, out, err, fragment):
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_eval_samples_prints_one_line_per_metric_and_json(tmp_path, capsys):
    from unmix.data import load_dataset

    samples = tmp_path / "s.npy"
    np.save(samples, load_dataset("digits").data[:300, 0].numpy())  # NHW
    code, out, err = _run(capsys, "eval", "--data", "digits", "--samples", samples, "--json", tmp_path / "m.json")
    assert code == 0, err
    names = [line.split()[0] for line in out.strip().splitlines()]
    assert names == ["fd", "kid", "precision", "recall", "n", "data"]
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["n"] == 300 and saved["fd"] == pytest.approx(float(out.split()[1]), rel=1e-5)


def test_eval_checkpoint_samples_it_itself(digits_ckpt, tmp_path, capsys):
    code, out, err = _run(capsys, "eval", digits_ckpt, "--n", 80, "--nfe", 2, "--sampler", "euler",
                          "--json", tmp_path / "m.json")
    assert code == 0, err
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["n"] == 80 and saved["sampler"] == "euler" and saved["nfe"] == 2 and saved["data"] == "digits"
    assert saved["fd"] > 10  # an untrained model is far from the digits


def test_eval_toy_checkpoint_gives_exact_metrics(ring_ckpt, capsys):
    code, out, err = _run(capsys, "eval", ring_ckpt, "--n", 200, "--nfe", 4)
    assert code == 0, err
    assert [line.split()[0] for line in out.splitlines()][:3] == ["sliced_w2", "log_density_gap", "log_density"]


def test_nll_vlb_and_ode_on_a_checkpoint(digits_ckpt, ring_ckpt, tmp_path, capsys):
    code, out, err = _run(capsys, "nll", digits_ckpt, "--n", 4, "--json", tmp_path / "v.json")
    assert code == 0, err
    v = json.loads((tmp_path / "v.json").read_text())
    assert v["method"] == "vlb" and v["levels"] == 17 and np.isfinite(v["bits_per_dim"])
    code, out, err = _run(capsys, "nll", digits_ckpt, "--method", "ode", "--n", 4, "--steps", 2, "--json",
                          tmp_path / "o.json")
    assert code == 0, err
    assert np.isfinite(json.loads((tmp_path / "o.json").read_text())["bits_per_dim"])
    code, out, err = _run(capsys, "nll", ring_ckpt, "--n", 16, "--steps", 4)
    assert code == 0, err
    lines = dict(line.split(maxsplit=1) for line in out.strip().splitlines())
    assert lines["method"] == "ode" and "log_likelihood_nats" in lines


def test_bad_inputs_give_one_line_and_exit_2(digits_ckpt, ring_ckpt, tmp_path, capsys):
    wrong_shape = tmp_path / "wrong.npy"
    np.save(wrong_shape, np.zeros((100, 16, 16), dtype=np.float32))
    few = tmp_path / "few.npy"
    np.save(few, np.zeros((10, 1, 8, 8), dtype=np.float32))
    pickled = tmp_path / "model.pt"
    pickled.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    empty = tmp_path / "empty"
    empty.mkdir()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("red apple\n")
    cases = [
        (("eval", digits_ckpt, "--prompts", prompts), "text models trained on emoji"),
        (("eval", digits_ckpt, "--prompts", tmp_path / "none.txt"), "cannot read prompts file"),
        (("eval", "--samples", few, "--prompts", prompts), "need a CHECKPOINT_DIR"),
        (("eval", "--samples", wrong_shape), "do not match digits"),
        (("eval", "--samples", few), "too few"),
        (("eval", "--samples", tmp_path / "missing.npy"), "missing.npy"),
        (("eval", "--samples", pickled), "not a plain .npy array"),
        (("eval", pickled), "pickle"),
        (("eval", empty), "holds no checkpoint"),
        (("eval", digits_ckpt, "--n", 10), "too few"),
        (("eval", digits_ckpt, "--data", "emoji"), "trained on digits, not emoji"),
        (("eval",), "either a CHECKPOINT_DIR or --samples"),
        (("eval", "--samples", few, "--data", "cifar"), "valid: digits, emoji"),
        (("nll", pickled), "pickle"),
        (("nll", ring_ckpt, "--method", "vlb"), "discrete-time model"),
        (("nll", digits_ckpt, "--trace", "magic", "--method", "ode", "--n", 1),
         "'magic' is not one of 'auto', 'exact', 'hutchinson'"),
    ]
    for argv, fragment in cases:
        _one_error_line(*_run(capsys, *argv), fragment)
