"""Launching on several machines: a 2-node torchrun rendezvous on loopback trains to identical weights on both
nodes, and a launch that asked for N processes but started one is caught (unmix.training.launch)."""
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

from unmix.training.config import TrainConfig
from unmix.training.launch import accelerate_processes, launcher_warning
from unmix.training.trainer import start

CONFIG = {"data": "digits", "steps": 3, "batch_size": 8, "threads": 1, "log_every": 1, "checkpoint_every": 3,
          "sample_every": 10**6, "nfe": 2, "net": {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                                                   "attn_levels": [1]}}
SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    from unmix.training.config import TrainConfig
    from unmix.training.trainer import start

    run = start(TrainConfig(out=sys.argv[1], **{config!r}))
    run.train(progress=False)
    save_file(run.net.state_dict(), f"{{sys.argv[1]}}/rank{{run.dist.rank}}.safetensors")
    dist.destroy_process_group()
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_rendezvous_on_loopback_gives_identical_weights(tmp_path):
    """Two torchrun agents, one process each, meet through the c10d rendezvous as two machines would."""
    script = tmp_path / "train.py"
    script.write_text(SCRIPT.format(config=CONFIG))
    out = tmp_path / "run"  # one folder for both "machines": the shared storage a multi-node run needs
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(r), "--nproc-per-node", "1",
         "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "unmix-test",
         str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for r in (0, 1)]
    logs = []
    try:
        for p in nodes:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in nodes:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(log[-3000:] for log in logs)
    rank0, rank1 = load_file(out / "rank0.safetensors"), load_file(out / "rank1.safetensors")
    assert rank0.keys() == rank1.keys() and all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    start = load_file(out / "checkpoint-00000003" / "model.safetensors")  # written by rank 0 alone
    assert all(torch.equal(rank0[k], start[k]) for k in rank0)
    assert (out / "stats.jsonl").read_text().count("\n") == 3  # one writer, one line per step


@pytest.mark.parametrize("environ, parent, expected", [
    ({}, [], None),
    ({"WORLD_SIZE": "2", "SLURM_NTASKS": "2"}, [], None),  # a torchrun group: nothing to warn about
    ({"SLURM_NTASKS": "4"}, [], "SLURM runs 4 tasks"),
    ({"SLURM_NTASKS": "4", "SLURM_STEP_NUM_TASKS": "1"}, [], None),  # `srun -n 1` inside a bigger allocation
    ({"SLURM_NTASKS": "1"}, [], None),
    ({"OMPI_COMM_WORLD_SIZE": "2"}, [], "Open MPI started 2 processes"),
    ({"PMI_SIZE": "8", "WORLD_SIZE": "1"}, [], "MPI (PMI) started 8 processes"),
    ({"ACCELERATE_USE_CPU": "True"}, ["python3", "/venv/bin/accelerate", "launch", "--cpu", "--num_processes", "2",
                                      "-m", "unmix", "train"], "accelerate launch asked for 2 processes"),
    ({}, ["python3", "-m", "accelerate.commands.launch", "--num_processes=3", "x.py"], "asked for 3 processes"),
    ({}, ["python3", "/venv/bin/accelerate", "launch", "--num_processes", "1", "x.py"], None),
    ({}, ["python3", "/venv/bin/torchrun", "--nproc-per-node", "2", "x.py"], None),
])
def test_launcher_warning(environ, parent, expected):
    message = launcher_warning(environ, parent)
    if expected is None:
        assert message is None
    else:
        assert expected in message and "\n" not in message


def test_accelerate_processes_reads_only_accelerate_command_lines():
    assert accelerate_processes(["/usr/bin/accelerate", "launch", "--cpu", "--num_processes", "4", "t.py"]) == 4
    assert accelerate_processes(["python", "train.py", "--num_processes", "4"]) is None
    assert accelerate_processes(["/usr/bin/accelerate", "launch", "--num_processes"]) is None


def test_the_trainer_prints_the_warning_on_rank_0(tmp_path, monkeypatch, capsys):
    """Run.__init__ itself warns: SLURM says 4 tasks, but this process is in no torchrun group."""
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    start(TrainConfig(out=str(tmp_path / "run"), **CONFIG))
    err = capsys.readouterr().err
    assert err.count("warning: SLURM runs 4 tasks") == 1
    monkeypatch.setenv("SLURM_NTASKS", "1")
    start(TrainConfig(out=str(tmp_path / "run2"), **CONFIG))
    assert "warning" not in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("accelerate") is None, reason="accelerate is not installed")
def test_accelerate_cpu_launch_really_starts_one_process_and_is_caught(tmp_path):
    """The case the warning exists for, run for real through the trainer: `accelerate launch --cpu
    --num_processes 2` starts one process, and building the run says so."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(
        f"""
        import os, sys
        from unmix.training.config import TrainConfig
        from unmix.training.trainer import start
        print('WORLD_SIZE', os.environ.get('WORLD_SIZE'))
        start(TrainConfig(out=sys.argv[1], **{CONFIG!r}))
        """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf")}  # no user accelerate config
    r = subprocess.run(["accelerate", "launch", "--cpu", "--num_processes", "2", str(script), str(tmp_path / "run")],
                       capture_output=True, text=True, env=env, timeout=120, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("WORLD_SIZE None") == 1  # one process, outside any process group
    assert r.stderr.count("warning: accelerate launch asked for 2 processes") == 1
