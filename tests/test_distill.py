"""Progressive distillation: the grid, the exactness of the target on exact denoisers, and distilled checkpoints."""
import json

import pytest
import torch

from unmix.analytic import FiniteDataset, ring_of_gaussians
from unmix.apps.distill import (
    DONE,
    DistillSettings,
    distill,
    distill_loss,
    distill_sigmas,
    native_recipe,
    rounds_of,
    two_step_target,
)
from unmix.cli.distill_cmd import distill_command  # noqa: F401  (the CLI module imports cleanly)
from unmix.data import Dataset
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.model import load
from unmix.samplers import default_sigmas, sample_euler, sample_heun
from unmix.training.config import TrainConfig
from unmix.training.trainer import start

F64 = torch.float64


def test_grids_nest_and_are_the_karras_grid_model_sample_walks():
    for k in (1, 2, 4, 8):
        fine, coarse = distill_sigmas(2 * k, 0.002, 80.0), distill_sigmas(k, 0.002, 80.0)
        assert torch.equal(fine[::2], coarse)
        lo, hi = native_recipe(Recipe(), k, 0.002, 80.0).sigma_range()
        walked = default_sigmas("euler", k, lo, hi)
        torch.testing.assert_close(walked, coarse, rtol=1e-12, atol=0)
    assert distill_sigmas(1, 0.002, 80.0).tolist() == [80.0, 0.0]
    with pytest.raises(UnmixError):
        native_recipe(Recipe.from_name("ddpm"), 2, 0.002, 80.0)


def _student_from_targets(teacher, coarse, fine, solver):
    """A 'perfect student': at each coarse level it outputs the distillation target (a lookup, not a network)."""
    levels = coarse.tolist()

    def student(x, sigma, cond=None):
        j = levels.index(float(sigma[0]))
        s, m, e = (torch.full((x.shape[0],), float(fine[2 * j + k]), dtype=F64) for k in range(3))
        return two_step_target(teacher, x, s, m, e, cond, solver)

    return student


@pytest.mark.parametrize("solver,fine_sampler", [("euler", sample_euler), ("heun", sample_heun)])
def test_target_makes_one_student_step_equal_two_teacher_steps(solver, fine_sampler):
    """Walking the coarse grid with Euler steps on the targets reproduces the teacher's own sampler on the fine grid
    (samplers from unmix.samplers, an exact Gaussian-mixture denoiser, float64)."""
    teacher = ring_of_gaussians()
    coarse, fine = distill_sigmas(4, 0.002, 80.0), distill_sigmas(8, 0.002, 80.0)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64) * 80.0
    got = sample_euler(_student_from_targets(teacher, coarse, fine, solver), x, coarse)
    want = fine_sampler(teacher, x, fine)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert (sample_euler(teacher, x, coarse) - want).abs().max() > 1e-2  # the teacher's own coarse steps do not
    assert (got - x / 80).abs().max() > 0.1  # the trajectories did move


def test_loss_is_zero_where_one_step_is_exact_and_positive_elsewhere():
    """A point mass has straight probability-flow paths: one Euler step of its exact denoiser equals two, so
    the exact student has zero loss; on a ring of Gaussians two Euler steps differ from one."""
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(32, 2, generator=g, dtype=F64), torch.randn(32, 2, generator=g, dtype=F64)
    fine = distill_sigmas(4, 0.002, 80.0)
    s, m, e = (fine[torch.tensor([0, 2] * 16) + k] for k in range(3))
    point = FiniteDataset(torch.tensor([[0.3, -0.5]], dtype=F64))
    assert distill_loss(point, point, x0, noise, s, m, e).max() < 1e-20
    ring = ring_of_gaussians()
    assert distill_loss(ring, ring, x0, noise, s, m, e).mean() > 1e-3


def test_rounds_halve_the_steps():
    assert rounds_of(16, 1) == [8, 4, 2, 1] and rounds_of(8, 4) == [4]
    for bad in ((12, 4), (4, 4), (6, 4)):
        with pytest.raises(UnmixError):
            rounds_of(*bad)


POINTS = torch.tensor([[0.8, 0.8], [-0.8, 0.8], [0.8, -0.8], [-0.8, -0.8]]).repeat(16, 1)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = TrainConfig(out=str(out), threads=1, steps=20, batch_size=32, lr=3e-3, warmup_steps=2, sample_every=10**6,
                      net={"hidden": 32, "depth": 2})
    start(cfg, Dataset("four", POINTS)).train(progress=False)
    return out


def _settings(**kw):
    return DistillSettings(**{**dict(from_nfe=4, steps=4, batch_size=16, warmup_steps=2, threads=1), **kw})


def test_distilled_checkpoint_samples_at_its_native_steps(teacher_run, tmp_path):
    out = tmp_path / "d1"
    result = distill(teacher_run, 1, out, _settings(), dataset=Dataset("four", POINTS), progress=False)
    assert result.stopped_by == "steps" and (out / "rounds" / "nfe-2" / DONE).is_file()
    model = load(out)
    assert model.sampling == {"sampler": "euler", "nfe": 1}
    calls = []
    x = model.sample(8, seed=3, callback=lambda step, sigma, *_: calls.append(sigma))
    assert calls == [80.0]  # one network call, from sigma_max straight to the data
    assert torch.equal(x, model.sample(8, seed=3)) and not torch.equal(x, model.sample(8, seed=4))
    config = json.loads((result.checkpoint / "config.json").read_text())
    assert config["objective"]["steps"] == 1 and config["objective"]["teacher"].endswith("teacher-2")
    # calling again finds every round finished and trains nothing
    assert distill(teacher_run, 1, out, _settings(), dataset=Dataset("four", POINTS), progress=False).step == 4


def test_interrupted_round_resumes_bit_for_bit(teacher_run, tmp_path):
    ds = Dataset("four", POINTS)
    distill(teacher_run, 2, tmp_path / "a", _settings(steps=6), dataset=ds, progress=False)
    distill(teacher_run, 2, tmp_path / "b", _settings(steps=3), dataset=ds, progress=False)
    (tmp_path / "b" / DONE).unlink()  # as if stopped after the checkpoint at step 3
    distill(teacher_run, 2, tmp_path / "b", _settings(steps=6), dataset=ds, progress=False)
    a, b = load(tmp_path / "a"), load(tmp_path / "b")
    assert b.sampling == {"sampler": "euler", "nfe": 2}
    for (name, p), q in zip(a.net.state_dict().items(), b.net.state_dict().values()):
        assert torch.equal(p, q), name
    # a distilled model distils further on its own grid, with Euler steps
    with pytest.raises(UnmixError, match="distilled to 2 steps"):
        distill(tmp_path / "a", 1, tmp_path / "c", _settings(from_nfe=4), dataset=ds, progress=False)
    distill(tmp_path / "a", 1, tmp_path / "c", _settings(from_nfe=None), dataset=ds, progress=False)
    first, second = (json.loads((load(tmp_path / f).checkpoint / "config.json").read_text())["objective"] for f in "ac")
    assert second["solver"] == "euler" and second["steps"] == 1
    assert [second[k] for k in ("sigma_end", "sigma_max", "rho")] == [first[k] for k in ("sigma_end", "sigma_max", "rho")]


def test_cli_distills_and_sample_uses_the_native_steps(tmp_path, capsys):
    import numpy as np

    import unmix.cli.sample_cmd  # noqa: F401  (registers the commands)
    from unmix.cli.app import run_app

    teacher = tmp_path / "moons"
    start(TrainConfig(data="moons", out=str(teacher), threads=1, steps=5, batch_size=32, warmup_steps=2,
                      sample_every=10**6, net={"hidden": 16, "depth": 2})).train(progress=False)
    out = tmp_path / "moons-1"
    args = ["distill", teacher, "--nfe", "1", "--from-nfe", "2", "--steps", "2", "--batch-size", "16", "--threads", "1"]
    assert run_app([str(a) for a in args + ["--out", out]]) == 0
    assert run_app(["distill", str(teacher), "--nfe", "1", "--from-nfe", "3", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "error: --from-nfe must be --nfe times a power of two" in err and "Traceback" not in err
    assert run_app(["sample", str(out), "--n", "4", "--seed", "0", "--save-npy", str(tmp_path / "s.npy"),
                    "--out", str(tmp_path / "samples")]) == 0
    assert "(euler, 1 NFE)" in capsys.readouterr().err
    x = torch.from_numpy(np.load(tmp_path / "s.npy"))
    assert torch.equal(x, load(out).sample(4, seed=0))
