"""The Python API in three lines:

    model = unmix.train("digits")                  # or unmix.load("runs/digits")
    images = model.sample(64, seed=0)               # [64, 1, 8, 8] float in [-1, 1]
    unmix.save_grid(images, "digits.png")

A Model is a network plus the recipe it was trained with; `model.denoiser` is the plain
D(x, sigma, cond) that samplers, guidance and metrics consume.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from unmix import checkpoint as ckpt
from unmix.data.images import render_batch
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.nets import build_net
from unmix.rng import generators_from_seeds
from unmix.samplers import sample as samplers_sample


class Model:
    """A trained network, its recipe and a description of its data (shape, class names)."""

    def __init__(self, net: nn.Module, recipe: Recipe, data: dict, checkpoint: Path | None = None):
        self.net, self.recipe, self.data, self.checkpoint = net.eval(), recipe, data, checkpoint

    @property
    def denoiser(self):
        return self.recipe.denoiser(self.net)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data["shape"])

    @property
    def num_classes(self) -> int:
        return int(getattr(self.net.config, "num_classes", 0))

    @property
    def class_names(self) -> list[str]:
        return list(self.data.get("class_names") or [])

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device) -> "Model":
        self.net.to(device)
        return self

    def labels_for(self, labels, n: int) -> torch.Tensor | None:
        """Class labels as a [n] tensor: an int or class name for all, or one per sample; None = unconditional."""
        if labels is None:
            return None
        if not self.num_classes:
            raise UnmixError("this model was trained without labels (--cond none); it cannot take a label")
        names = self.class_names
        if isinstance(labels, (str, int)):
            labels = [labels] * n
        out = []
        for lab in labels if not isinstance(labels, torch.Tensor) else labels.tolist():
            if isinstance(lab, str) and not lab.lstrip("-").isdigit():
                if lab not in names:
                    raise UnmixError(f"unknown class {lab!r}; valid: {', '.join(names)}")
                lab = names.index(lab)
            lab = int(lab)
            if not 0 <= lab <= self.num_classes:
                raise UnmixError(f"label {lab} out of range: valid 0..{self.num_classes - 1} "
                                 f"(or {self.num_classes} for no label)")
            out.append(lab)
        if len(out) != n:
            raise UnmixError(f"got {len(out)} labels for {n} samples")
        return torch.tensor(out, dtype=torch.long)

    @torch.no_grad()
    def sample(self, n: int = 16, seed: int = 0, seeds=None, sampler: str | None = None, nfe: int = 32,
               labels=None, guidance: float | None = None, device=None, batch_size: int = 256, callback=None,
               **options) -> torch.Tensor:
        """n samples [n, *shape], clamped to [-1, 1]. Sample i uses seed + i (or seeds[i]), so it does
        not depend on n or the batch size. `callback(step, sigma, x, x0_hat)` sees each batch's steps."""
        from unmix.guidance import steer
        from unmix.samplers import DEFAULT_SAMPLER, sample

        if n < 1:
            raise UnmixError(f"number of samples must be >= 1, got {n}")
        seeds = list(range(seed, seed + n)) if seeds is None else [int(s) for s in seeds]
        if len(seeds) != n:
            raise UnmixError(f"got {len(seeds)} seeds for {n} samples")
        device = torch.device(device) if device is not None else self.device
        self.net.to(device)
        cond = self.labels_for(labels, n)
        sigma_min, sigma_max = self.recipe.sigma_range()
        denoiser = steer(self.denoiser, cond, guidance)
        out = []
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            x = sample(denoiser, (hi - lo, *self.shape), sampler or DEFAULT_SAMPLER, nfe,
                       generator=generators_from_seeds(seeds[lo:hi]), device=device, sigma_min=sigma_min,
                       sigma_max=sigma_max, cond=None if cond is None else cond[lo:hi].to(device),
                       callback=callback, **options)
            out.append(x.float().clamp(-1, 1).cpu())
        return torch.cat(out)


def load(path: str | os.PathLike, weights: str = "ema", device: str | torch.device = "cpu") -> Model:
    """A Model from a checkpoint folder or a training output folder (its latest checkpoint)."""
    c = ckpt.open_checkpoint(path)
    net = build_net(c.config["net"])
    try:
        net.load_state_dict(c.weights(weights))
    except RuntimeError as e:
        raise UnmixError(f"{c.path}: weights do not match the network in config.json ({str(e).splitlines()[0]})") from None
    return Model(net.to(device), Recipe.from_dict(c.config["recipe"]), c.config.get("data", {}), c.path)


def train(data: str = "digits", resume: bool = False, progress: bool = True, **settings) -> Model:
    """Train (see unmix.train.TrainConfig for settings) and return the trained Model (EMA weights)."""
    from unmix.train import TrainConfig, Trainer

    settings["data"] = data
    result = Trainer(TrainConfig.from_dict(settings), resume=resume, overrides=settings).run(progress=progress)
    return load(result.checkpoint)


def sample(model, n=16, **options) -> torch.Tensor:
    """Samples from a Model or a checkpoint path (n samples; options as for Model.sample), or from any
    denoiser D(x, sigma, cond) with `n` a shape [N, ...] (options as for unmix.samplers.sample)."""
    if isinstance(model, (Model, str, os.PathLike)):
        return (model if isinstance(model, Model) else load(model)).sample(n, **options)
    return samplers_sample(model, n, **options)


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save images [N, C, H, W] in [-1, 1] as one PNG grid (or 2-D points [N, 2] as a scatter plot)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_batch(images, nrow).save(path)
    return path
