"""Latent diffusion's first stage as a run: train or resume an autoencoder, then store its latent scale.

Shared by `unmix train-autoencoder` and the one-call latent run (`unmix.train(..., latent=True)`, `unmix train
--latent`), which trains the autoencoder into OUT/autoencoder inside the same time budget before the diffusion
(`latent_stages`). A finished stage leaves `finished.json` in its folder, so running the one call again (or with
resume) goes straight to the diffusion.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from unmix.errors import UnmixError
from unmix.store.checkpoint import list_checkpoints
from unmix.store.files import write_text
from unmix.training import trainer
from unmix.training.autoencoder import autoencoder_config, finish_autoencoder, stored_objective
from unmix.training.config import default_out

# Share of a `train --latent --minutes M` budget spent on the autoencoder. 0.3 was benchmarks/latent_emoji.py's
# best split for a plain U-Net (run lat-b); with the neighbours' guess (the latent preset) the diffusion learns in
# minutes and the autoencoder's reconstructions bound the quality, so it gets half.
AUTOENCODER_SHARE = 0.5
# The autoencoder trains for at most this many steps (about 8 minutes at 32x32 on one CPU thread), or --steps
# when that is fewer: --steps caps each stage, so `--latent --steps 2` is a short run.
AUTOENCODER_STEPS = 700
FINISHED = "finished.json"


def start_autoencoder(settings: dict, out: str | Path, resume: bool = False) -> trainer.Run:
    """A Run training an autoencoder into `out` (TrainConfig settings; net= and the loss weights edge_weight=,
    kl_weight= for a new run), or continuing the one there."""
    if resume:
        if {"net", "edge_weight", "kl_weight"} & settings.keys():
            raise UnmixError("resuming keeps the autoencoder and its loss; drop the network and loss settings")
        return trainer.resume(str(out), objective=stored_objective(out), **settings)
    config, objective = autoencoder_config({"data": "emoji", **settings, "out": str(out)})
    return trainer.start(config, objective=objective)


def finish(run: trainer.Run, result: trainer.TrainResult) -> dict | None:
    """Store the latent scale in the run's last checkpoint and mark the stage done (unless it was interrupted);
    the reconstruction metrics over the training images, or None when there is no checkpoint."""
    if not run.dist.main or result.checkpoint is None:
        return None
    metrics = {"step": result.step, "checkpoint": str(result.checkpoint),
               **finish_autoencoder(result.checkpoint, run.dataset)}
    if result.stopped_by not in ("SIGINT", "SIGTERM"):
        write_text(Path(run.config.out) / FINISHED, json.dumps(metrics, indent=2) + "\n")
    return metrics


def is_finished(folder: str | Path) -> bool:
    return (Path(folder) / FINISHED).is_file()


def stage_budget(minutes: float | None, steps: int | None = None) -> dict:
    """The autoencoder's share of a one-command latent run: AUTOENCODER_SHARE of `minutes` when given, and at
    most `steps` (the diffusion's own cap) steps, else AUTOENCODER_STEPS when no minutes are given."""
    budget = {"minutes": minutes * AUTOENCODER_SHARE} if minutes is not None else {}
    if steps is not None or minutes is None:
        budget["steps"] = min(steps or AUTOENCODER_STEPS, AUTOENCODER_STEPS)
    return budget


@dataclass
class FirstStage:
    """What the one-call latent run's first stage did: its folder, and (when it trained) its result and metrics."""

    folder: Path
    result: trainer.TrainResult | None = None
    metrics: dict | None = None
    planned: trainer.Run | None = None  # a dry run before any autoencoder exists: the stage it would train

    @property
    def interrupted(self) -> bool:
        return self.result is not None and self.result.stopped_by in ("SIGINT", "SIGTERM")


# what the autoencoder stage takes of the run's settings (the rest are the diffusion's)
STAGE_KEYS = ("data", "size", "seed", "device", "threads", "compile", "precision")


def latent_stages(settings: dict, resume: bool = False, autoencoder: str | None = None, dry_run: bool = False,
                  announce=None, progress: bool = True) -> tuple[dict, bool, FirstStage]:
    """Latent diffusion in one call, the first half: train (or finish) the autoencoder into OUT/autoencoder inside
    the budget (`stage_budget`: half of minutes=, at most steps= and AUTOENCODER_STEPS) unless `autoencoder` names
    one, then return the diffusion's settings (latent= set, minutes= what the first stage left) and whether the
    diffusion resumes. `announce(run)` is called before the stage trains.
    A latent run being resumed holds its own autoencoder; a dry run trains nothing (and, with no autoencoder yet,
    returns the stage it would train as `planned`: the diffusion's latents cannot be resolved before it)."""
    settings = dict(settings)
    out = Path(settings.get("out") or default_out(settings.get("data", "digits")))
    stage = FirstStage(Path(autoencoder) if autoencoder else out / "autoencoder")

    def stage_run() -> trainer.Run:
        return start_autoencoder({**{k: settings[k] for k in STAGE_KEYS if k in settings},
                                  **stage_budget(settings.get("minutes"), settings.get("steps"))},
                                 stage.folder, resume=bool(list_checkpoints(stage.folder)))

    if dry_run and not autoencoder and not list_checkpoints(stage.folder) and not (resume and list_checkpoints(out)):
        stage.planned = stage_run()
        return settings, resume, stage
    if not (autoencoder or dry_run or is_finished(stage.folder) or (resume and not stage.folder.is_dir())):
        run = stage_run()
        if announce is not None and run.dist.main:
            announce(run)
        t0 = time.monotonic()
        stage.result = run.train(progress=progress)
        stage.metrics = finish(run, stage.result)
        if settings.get("minutes") is not None:
            settings["minutes"] = round(max(settings["minutes"] - (time.monotonic() - t0) / 60, 0.01), 2)
    if not (resume and list_checkpoints(out)):
        settings["latent"], resume = str(stage.folder), False
    return settings, resume, stage
