"""Latent diffusion's first stage as a run: train or resume an autoencoder, then store its latent scale.

Shared by `unmix train-autoencoder` and the one-command `unmix train --latent`, which trains the autoencoder into
OUT/autoencoder inside the same time budget before the diffusion. A finished stage leaves `finished.json` in its
folder, so running the one command again (or with --resume) goes straight to the diffusion.
"""
from __future__ import annotations

import json
from pathlib import Path

from unmix.errors import UnmixError
from unmix.latent import autoencoder_config, finish_autoencoder, stored_objective
from unmix.store.files import write_text
from unmix.training import trainer

# Share of a `train --latent --minutes M` budget spent on the autoencoder. 0.3 was benchmarks/latent_emoji.py's
# best split for a plain U-Net (run lat-b); with the neighbours' guess (the latent preset) the diffusion learns in
# minutes and the autoencoder's reconstructions bound the quality, so it gets half.
AUTOENCODER_SHARE = 0.5
# Without --minutes the autoencoder trains for this many steps (about 8 minutes at 32x32 on one CPU thread).
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


def stage_budget(minutes: float | None) -> dict:
    """The autoencoder's share of a one-command latent run: {"minutes": ...} or {"steps": ...}."""
    return {"minutes": minutes * AUTOENCODER_SHARE} if minutes is not None else {"steps": AUTOENCODER_STEPS}
