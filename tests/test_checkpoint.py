import json
import pickle

import pytest
import torch

from unmix.errors import UnmixError
from unmix.store import checkpoint as ckpt


def _save(run, step, keep=3, value=1.0):
    w = {"w": torch.full((2, 2), value)}
    state = {"optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2)}},
                           "param_groups": [{"lr": 0.1, "betas": [0.9, 0.99], "params": [0]}]},
             "generator": torch.Generator().manual_seed(1).get_state(), "step": step, "cuda_rng": []}
    return ckpt.save_checkpoint(run, step, {"net": {"kind": "mlp"}, "recipe": {"name": "edm"}},
                                {"model": w, "ema": w}, state, keep)


def test_roundtrip_with_optimizer_state_and_no_pickle(tmp_path):
    path = _save(tmp_path, 7)
    assert path.name == "checkpoint-00000007"
    assert sorted(p.name for p in path.iterdir()) == [
        "config.json", "ema.safetensors", "model.safetensors", "state.json", "state.safetensors"]
    c = ckpt.open_checkpoint(tmp_path)
    assert c.step == 7 and c.config["format"] == "unmix-checkpoint"
    assert torch.equal(c.weights("ema")["w"], torch.ones(2, 2))
    state = c.training_state()
    assert state["optimizer"]["state"][0]["exp_avg"].tolist() == [1.0, 1.0]
    assert list(state["optimizer"]["state"]) == [0]  # integer keys survive JSON
    assert state["optimizer"]["param_groups"][0]["betas"] == [0.9, 0.99]
    assert torch.equal(state["generator"], torch.Generator().manual_seed(1).get_state())


def test_optimizer_state_flattening_roundtrip():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, skeleton = ckpt.flatten_state(opt.state_dict())
    json.dumps(skeleton)
    twin = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters())
    twin.load_state_dict(ckpt.unflatten_state(json.loads(json.dumps(skeleton)), tensors))
    for a, b in zip(opt.state_dict()["state"].values(), twin.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_keeps_the_last_k_and_latest_is_highest_step(tmp_path):
    for step in (10, 20, 30, 40):
        _save(tmp_path, step, keep=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-00000030", "checkpoint-00000040"]
    assert ckpt.resolve_checkpoint(tmp_path).name == "checkpoint-00000040"
    assert ckpt.resolve_checkpoint(tmp_path / "checkpoint-00000030").name == "checkpoint-00000030"
    _save(tmp_path, 40, keep=2, value=5.0)  # re-saving a step replaces it
    assert ckpt.open_checkpoint(tmp_path).weights("model")["w"][0, 0] == 5.0


def test_crash_during_write_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    _save(tmp_path, 10)
    before = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint-00000010").iterdir()}

    def crash(folder, *args):
        (folder / "model.safetensors").write_bytes(b"half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "_write_files", crash)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, 20)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000010"]  # no partial folder, nothing hidden left
    c = ckpt.open_checkpoint(tmp_path)
    assert c.step == 10 and torch.equal(c.weights("model")["w"], torch.ones(2, 2))
    assert {p.name: p.read_bytes() for p in c.path.iterdir()} == before


def test_non_checkpoints_are_refused_without_unpickling(tmp_path):
    evil = tmp_path / "model.pkl"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(UnmixError, match="pickle / torch.save file.*never unpickles"):
        ckpt.open_checkpoint(evil)
    zipped = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1)}, zipped)
    with pytest.raises(UnmixError, match="pickle / torch.save file"):
        ckpt.open_checkpoint(zipped)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UnmixError, match="is a file, not an unmix checkpoint"):
        ckpt.open_checkpoint(text)
    with pytest.raises(UnmixError, match="does not exist"):
        ckpt.open_checkpoint(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnmixError, match="holds no checkpoint"):
        ckpt.open_checkpoint(tmp_path / "empty")


def test_damaged_checkpoints_are_clear_errors(tmp_path):
    path = _save(tmp_path, 1)
    (path / "ema.safetensors").write_bytes(b"\x00" * 5)
    with pytest.raises(UnmixError, match="not a readable safetensors file"):
        ckpt.open_checkpoint(path).weights("ema")
    (path / "config.json").write_text("{not json")
    with pytest.raises(UnmixError, match="not valid JSON"):
        ckpt.open_checkpoint(path)
    (path / "config.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(UnmixError, match="not an unmix checkpoint"):
        ckpt.open_checkpoint(path)
