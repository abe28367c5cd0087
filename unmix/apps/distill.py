"""Progressive distillation (Salimans & Ho 2022): halve a deterministic sampler's steps, round after round.

A round trains a student, initialised from its teacher, so that ONE Euler (= deterministic DDIM) step of the student
from sigma_i to sigma_{i+1} lands where TWO teacher steps land (through the midpoint level). In the sigma convention
an Euler step with denoiser output d is x' = d + (s'/s)(x - d), so the student's x0-target for the two-step endpoint
x2 is (Salimans & Ho, Algorithm 2, eq. 8 written for x = x0 + sigma * eps)

    d_target = (x2 - (e/s) x) / (1 - e/s)          (= x2 when e = 0, the step into the data)

and the loss is max(1/sigma^2, 1) |D_student(x, s) - d_target|^2 ("truncated SNR" weighting, their section 4).
The student of one round is the teacher of the next: 16 -> 8 -> 4 -> 2 -> 1 steps.

Why progressive and not consistency distillation: with a deterministic teacher, a student that outputs d_target
reproduces the teacher's fine-grid trajectory exactly (tests/test_distill.py checks this on an exact denoiser to
1e-10), so every error is a training error, and each round is ordinary regression on the trainer we have; a
consistency model needs its own sampler and a target network, and is exact only in the limit of many steps.

The grid. sigma(t) = (sigma_max^(1/rho) + t (sigma_end^(1/rho) - sigma_max^(1/rho)))^rho at t = i/N for i < N,
then 0: Karras' interpolation, but with the last level replaced by 0 so that the grid of N/2 steps is every other
level of the grid of N steps (rounds nest). It is exactly the Karras grid of N levels from sigma_max down to
sigma((N-1)/N), so the student's checkpoint stores a recipe with sigma_min = sigma((N-1)/N) and sampling
{"sampler": "euler", "nfe": N}: `Model.sample` then walks the very grid the student was trained on.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unmix.denoiser import expand_like
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.model import load
from unmix.store import checkpoint as ckpt
from unmix.store.files import write_text
from unmix.training.config import TrainConfig
from unmix.training.trainer import TrainResult, resume, start

SOLVERS = ("euler", "heun")
DONE = "distilled.json"  # marks a finished round in its run folder


# --- pure functions: the grid, one teacher step, the target, the loss ---------------------------------------------
def distill_sigmas(steps: int, sigma_end: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """The nesting grid of `steps` steps: `steps` positive levels from sigma_max, then 0 (float64)."""
    if not isinstance(steps, int) or steps < 1:
        raise UnmixError(f"steps must be an integer >= 1, got {steps!r}")
    t = torch.arange(steps, dtype=torch.float64) / steps
    hi, lo = sigma_max ** (1 / rho), sigma_end ** (1 / rho)
    return torch.cat([(hi + t * (lo - hi)) ** rho, torch.zeros(1, dtype=torch.float64)])


def native_recipe(recipe: Recipe, steps: int, sigma_end: float, sigma_max: float, rho: float = 7.0) -> Recipe:
    """The recipe whose sampling range makes the Karras grid of `steps` levels equal distill_sigmas(steps)."""
    if recipe.discrete is not None:
        raise UnmixError(f"distillation needs a model trained with a continuous recipe (edm); this one uses the "
                         f"discrete {recipe.schedule!r} schedule")
    lowest = float(distill_sigmas(steps, sigma_end, sigma_max, rho)[-2]) if steps > 1 else recipe.sigma_min
    return dataclasses.replace(recipe, sigma_min=min(lowest, sigma_max / 2), sigma_max=sigma_max)


def teacher_step(denoiser, x: torch.Tensor, s: torch.Tensor, e: torch.Tensor, cond=None,
                 solver: str = "euler") -> torch.Tensor:
    """One deterministic step from per-sample levels s to e ([N] tensors): Euler (= DDIM, eta 0), or EDM's Heun
    (Karras et al. 2022, Algorithm 1) with a plain Euler step wherever e = 0, as unmix.samplers.sample_heun does."""
    d = denoiser(x, s, cond)
    x_euler = d + expand_like(e / s, x) * (x - d)
    if solver == "euler":
        return x_euler
    if solver != "heun":
        raise UnmixError(f"solver= must be one of {', '.join(SOLVERS)}, got {solver!r}")
    positive = e > 0
    if not bool(positive.any()):
        return x_euler
    e_safe = torch.where(positive, e, s)  # the network never sees sigma = 0; those rows keep the Euler step
    d2 = denoiser(x_euler, e_safe, cond)
    slope = (x - d) / expand_like(s, x) + (x_euler - d2) / expand_like(e_safe, x)
    x_heun = x + expand_like((e - s) / 2, x) * slope
    return torch.where(expand_like(positive, x), x_heun, x_euler)


def two_step_target(denoiser, x: torch.Tensor, s: torch.Tensor, m: torch.Tensor, e: torch.Tensor, cond=None,
                    solver: str = "euler") -> torch.Tensor:
    """The x0-target whose single Euler step s -> e equals two teacher steps s -> m -> e (Salimans & Ho, eq. 8)."""
    x2 = teacher_step(denoiser, teacher_step(denoiser, x, s, m, cond, solver), m, e, cond, solver)
    r = expand_like(e / s, x)
    return (x2 - r * x) / (1 - r)


def distill_loss(student, teacher, x0: torch.Tensor, noise: torch.Tensor, s: torch.Tensor, m: torch.Tensor,
                 e: torch.Tensor, cond=None, solver: str = "euler") -> torch.Tensor:
    """Per-sample loss [N]: truncated-SNR-weighted squared error of the student's x0 against the two-step target."""
    x = x0 + expand_like(s, x0) * noise
    with torch.no_grad():
        target = two_step_target(teacher, x, s, m, e, cond, solver)
    err = (student(x, s, cond) - target).float().square().flatten(1).mean(1)
    return err * (1 / s.float().square()).clamp(min=1.0)


# --- the trainer objective ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Round:
    """One round: a student of `steps` steps learning a teacher (a checkpoint folder) of 2 * steps steps."""

    teacher: str
    steps: int
    sigma_end: float
    sigma_max: float
    rho: float = 7.0
    solver: str = "euler"

    def to_dict(self) -> dict:
        return {"kind": "progressive_distillation", **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "Round":
        if not isinstance(d, dict) or d.get("kind") != "progressive_distillation":
            raise UnmixError("this run was not trained by unmix distill (its config.json has no distillation objective)")
        try:
            return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})
        except KeyError as e:
            raise UnmixError(f"the distillation objective in config.json lacks {e}; the checkpoint is damaged") from None


class ProgressiveDistillation:
    """The trainer objective of one round (see unmix.training.objectives for the draw / loss / bucket contract)."""

    def __init__(self, spec: Round, label_dropout: float = 0.0):
        self.spec, self.label_dropout = spec, label_dropout
        self.teacher = load(spec.teacher)
        self.teacher.net.requires_grad_(False)
        self.num_classes = self.teacher.num_classes
        self.recipe = native_recipe(self.teacher.recipe, spec.steps, spec.sigma_end, spec.sigma_max, spec.rho)
        self.fine = distill_sigmas(2 * spec.steps, spec.sigma_end, spec.sigma_max, spec.rho)

    def draw(self, batch: int, generator: torch.Generator, item_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        step = torch.randint(0, self.spec.steps, (batch,), generator=generator)
        noise = torch.randn((batch, *item_shape), generator=generator)
        drop = torch.rand(batch, generator=generator) < self.label_dropout
        return {"step": step, "noise": noise, "drop": drop}

    def loss(self, net: nn.Module, x0: torch.Tensor, cond, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.teacher.device != x0.device:
            self.teacher.to(x0.device)
        cond = torch.where(draws["drop"].to(x0.device), self.num_classes, cond) if self.num_classes else None
        i = 2 * draws["step"].cpu()
        s, m, e = (self.fine[i + k].to(x0.device, x0.dtype) for k in range(3))
        return distill_loss(self.recipe.denoiser(net), self.teacher.denoiser, x0, draws["noise"].to(x0.device),
                            s, m, e, cond, self.spec.solver)

    def bucket(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student step as a fraction of the trajectory, in [0, 1) (loss by quartile of the grid)."""
        return draws["step"].float() / self.spec.steps

    def checkpoint_config(self) -> dict:
        return {"recipe": self.recipe.to_dict(), "objective": self.spec.to_dict(),
                "sampling": {"sampler": "euler", "nfe": self.spec.steps}}


# --- the recipe: rounds from a trained run down to `nfe` steps ---------------------------------------------------
@dataclass
class DistillSettings:
    """What `distill` trains with; each round is an ordinary trainer run (EMA, checkpoints, resume, DDP)."""

    from_nfe: int | None = None  # the first round's teacher steps: default 16, or a distilled model's own steps
    minutes: float | None = None  # wall-clock budget of all rounds together (split evenly)
    steps: int | None = None  # optimiser steps per round (default 300 when minutes is not given)
    batch_size: int = 128
    lr: float = 5e-4
    ema_halflife_kimg: float = 5.0
    warmup_steps: int = 50
    seed: int = 0
    rho: float = 7.0
    first_solver: str = "heun"  # a trained model's steps in round 1 ("euler" for plain DDIM); later rounds: Euler
    checkpoint_every: int = 1000
    device: str = "auto"
    threads: int | None = None


def rounds_of(from_nfe: int, nfe: int) -> list[int]:
    """The student step counts: from_nfe/2, from_nfe/4, ..., nfe (from_nfe must be nfe times a power of two)."""
    if not isinstance(nfe, int) or isinstance(nfe, bool) or nfe < 1:
        raise UnmixError(f"nfe= must be an integer >= 1, got {nfe!r}")
    ratio = from_nfe // nfe if isinstance(from_nfe, int) and from_nfe > nfe else 0
    if ratio < 2 or ratio * nfe != from_nfe or ratio & (ratio - 1):
        raise UnmixError(f"from_nfe= must be nfe= times a power of two (2, 4, 8, ...), got from_nfe={from_nfe!r}, "
                         f"nfe={nfe}")
    out, k = [], from_nfe
    while k > nfe:
        k //= 2
        out.append(k)
    return out


def distill(run: str | os.PathLike, nfe: int, out: str | os.PathLike, settings: DistillSettings | None = None,
            dataset=None, progress: bool = True) -> TrainResult:
    """Distil the model in `run` into a sampler of `nfe` Euler steps, written as a run in `out`.

    Intermediate rounds live in out/rounds/nfe-N, each teacher (an EMA snapshot) in out/rounds/teacher-N; the final
    round is `out` itself, so `unmix.load(out)` is the distilled model and samples at `nfe` steps by default.
    Calling it again continues: finished rounds are skipped, an interrupted one is resumed."""
    cfg = settings or DistillSettings()
    if cfg.first_solver not in SOLVERS:
        raise UnmixError(f"first_solver= must be one of {', '.join(SOLVERS)}, got {cfg.first_solver!r}")
    out = Path(out)
    source = ckpt.open_checkpoint(run)
    grid, first_solver = _grid_of(source, cfg)
    plan = rounds_of(cfg.from_nfe or grid.get("steps", 16), nfe)
    if "steps" in grid and cfg.from_nfe not in (None, grid["steps"]):
        raise UnmixError(f"{source.path} is distilled to {grid['steps']} steps; distilling it further starts there "
                         f"(from_nfe={grid['steps']} or None), got from_nfe={cfg.from_nfe}")
    trained = load(run)
    if trained.is_text:
        raise UnmixError(f"{source.path} is a text-conditional model; distill supports unconditional and "
                         "class-conditional models for now")
    sigma_end, sigma_max, rho = grid.get("sigma_end"), grid.get("sigma_max"), grid.get("rho", cfg.rho)
    if sigma_end is None:
        sigma_end, sigma_max = trained.recipe.sigma_range()
    native_recipe(trained.recipe, 1, sigma_end, sigma_max, rho)  # rejects discrete recipes up front
    train = source.config.get("train") or {}
    minutes = None if cfg.minutes is None else cfg.minutes / len(plan)
    steps = cfg.steps if cfg.steps is not None or minutes is not None else 300
    result, previous = None, trained
    for k, steps_k in enumerate(plan):
        folder = out if steps_k == nfe else out / "rounds" / f"nfe-{steps_k}"
        teacher = out / "rounds" / f"teacher-{2 * steps_k}"
        spec = Round(str(teacher.resolve()), steps_k, sigma_end, sigma_max, rho, first_solver if k == 0 else "euler")
        if _finished(folder):
            previous = load(folder)
            continue
        if not (teacher / "config.json").is_file():
            previous.save(teacher)
        objective = ProgressiveDistillation(spec, float(train.get("label_dropout") or 0.0))
        if ckpt.list_checkpoints(folder):
            stored = Round.from_dict(ckpt.open_checkpoint(folder).config.get("objective"))
            if stored != spec:
                raise UnmixError(f"{folder} holds a different distillation ({stored}); choose another out=")
            budget = {"steps": steps} if steps is not None else {"minutes": minutes}
            job = resume(folder, dataset=dataset, objective=objective, **budget)
        else:
            job = start(TrainConfig(
                data=train.get("data") or trained.data.get("name", "digits"), size=train.get("size"), out=str(folder),
                init=str(teacher), cond=train.get("cond", "label" if trained.num_classes else "none"),
                label_dropout=train.get("label_dropout"), steps=steps, minutes=minutes, batch_size=cfg.batch_size,
                lr=cfg.lr, ema_halflife_kimg=cfg.ema_halflife_kimg, warmup_steps=cfg.warmup_steps, seed=cfg.seed,
                checkpoint_every=cfg.checkpoint_every, sample_every=10**9, device=cfg.device, threads=cfg.threads,
                recipe=trained.recipe.name), dataset=dataset, objective=objective)
        result = job.train(progress=progress)
        if result.stopped_by not in ("steps", "minutes"):
            return result  # interrupted: calling distill again resumes this round
        if job.dist.main:
            _atomic_json(folder / DONE, {"step": result.step, "stopped_by": result.stopped_by, "nfe": steps_k})
        previous = load(folder)
    return result or TrainResult(ckpt.resolve_checkpoint(out), _done_step(out), "steps")


def _grid_of(source: ckpt.Checkpoint, cfg: DistillSettings) -> tuple[dict, str]:
    """(the grid to continue, the first round's teacher solver): a distilled model goes on halving its own grid with
    Euler steps (its sampler); a trained model starts a new grid, stepped by cfg.first_solver."""
    stored = source.config.get("objective")
    if isinstance(stored, dict) and stored.get("kind") == "progressive_distillation":
        return Round.from_dict(stored).__dict__, "euler"
    return {}, cfg.first_solver


def _finished(folder: Path) -> bool:
    """A round is done when it says so (a finished round is never continued: the next round learnt from it)."""
    return (folder / DONE).is_file()


def _done_step(out: Path) -> int:
    return int(json.loads((out / DONE).read_text()).get("step", 0))


def _atomic_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data) + "\n")

