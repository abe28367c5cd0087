"""Latent diffusion's first stage as a training objective: what one step of an autoencoder optimises, the settings
that make it a run of the trainer, and the latent scale stored into its final checkpoint."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from unmix.data import Dataset
from unmix.encoders import ae_config, frozen_autoencoder, latent_scale, reconstruction_metrics
from unmix.errors import UnmixError
from unmix.nets import net_config
from unmix.nets.autoencoder import AutoencoderConfig
from unmix.store import checkpoint as ckpt
from unmix.training.config import TrainConfig


# -- the first stage's training objective ---------------------------------------------------------------------
@dataclass
class AutoencoderObjective:
    """Per-sample loss of an autoencoder, in the trainer's objective contract (draw / loss / bucket).

        loss = |x - x'|_1  +  edge_weight * GDL(x, x')  +  kl_weight * KL(q(z|x) || N(0, I)) / pixels

    L1 keeps colours flat where L2 would smear them; the gradient difference loss (Mathieu et al. 2016, "Deep
    multi-scale video prediction beyond mean square error", eq. 5 with alpha = 1) penalises edges that are
    softer or harder than the original's, which is what makes an L1-only decoder look blurred; the KL is summed
    over the latent and divided by the image's pixel count, so kl_weight is per pixel as the other terms are
    (Stable Diffusion's 1e-6 is per summed pixel loss: a far lighter pull than any value here). The latent is
    drawn from the posterior (the reparameterisation trick) with noise from the trainer's generator.
    """

    latent_channels: int = 4
    factor: int = 4
    edge_weight: float = 1.0
    kl_weight: float = 1e-4

    def __post_init__(self):
        for name in ("edge_weight", "kl_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UnmixError(f"{name}= must be a finite number >= 0, got {value}")

    @classmethod
    def for_net(cls, config: AutoencoderConfig | dict, **weights) -> "AutoencoderObjective":
        cfg = ae_config(config)
        return cls(cfg.latent_channels, cfg.factor, **weights)

    def draw(self, batch: int, generator: torch.Generator, item_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        _, h, w = item_shape
        shape = (batch, self.latent_channels, h // self.factor, w // self.factor)
        return {"eps": torch.randn(shape, generator=generator)}

    def loss(self, net: nn.Module, x0: torch.Tensor, cond, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        recon, mean, logvar = net(x0, draws["eps"].to(x0.device))  # through forward, so DDP syncs the gradients
        recon, mean, logvar = recon.float(), mean.float(), logvar.float()
        total = (recon - x0).abs().flatten(1).mean(1)
        if self.edge_weight:
            total = total + self.edge_weight * gradient_difference(recon, x0)
        if self.kl_weight:
            kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)
            total = total + self.kl_weight * kl / x0[0].numel()
        return total

    def bucket(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """No noise levels here: every sample in the first quartile (the log's loss_q0 is the whole loss)."""
        return torch.zeros(draws["eps"].shape[0])

    def to_dict(self) -> dict:
        return {"kind": "autoencoder", **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "AutoencoderObjective":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def checkpoint_config(self) -> dict:
        return {"objective": self.to_dict()}

    @torch.no_grad()
    def preview(self, net: nn.Module, dataset: Dataset) -> torch.Tensor:
        """The run's preview grid (rows of 8): the first 32 items, each row of originals over its reconstructions."""
        device = next(net.parameters()).device
        x = dataset.batch(torch.arange(min(32, len(dataset))))[0].to(device)
        recon = net(x)[0].float().clamp(-1, 1)
        return torch.cat([t for i in range(0, len(x), 8) for t in (x[i:i + 8], recon[i:i + 8])]).cpu()


def gradient_difference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean of | |grad a| - |grad b| | over horizontal and vertical finite differences."""
    dx = ((a[..., :, 1:] - a[..., :, :-1]).abs() - (b[..., :, 1:] - b[..., :, :-1]).abs()).abs()
    dy = ((a[..., 1:, :] - a[..., :-1, :]).abs() - (b[..., 1:, :] - b[..., :-1, :]).abs()).abs()
    return (dx.flatten(1).mean(1) + dy.flatten(1).mean(1)) / 2


# -- the first stage as a run of the trainer ------------------------------------------------------------------
# The emoji first stage of benchmarks/latent_emoji.py (run ae6): f = 4, 4 latent channels, 0.46M parameters.
AUTOENCODER_NET = dict(channels=32, channel_mult=[1, 2, 2], num_res_blocks=1, latent_channels=4)
AUTOENCODER_TRAIN = dict(batch_size=32, lr=2e-3, ema_halflife_kimg=2.0, warmup_steps=100)


def autoencoder_config(settings: dict) -> tuple[TrainConfig, AutoencoderObjective]:
    """(TrainConfig, objective) for `unmix.training.trainer.start(config, objective=objective)` training an autoencoder:
    `settings` are TrainConfig fields (net= overrides AUTOENCODER_NET) plus the loss weights edge_weight= and
    kl_weight=; the rest default to AUTOENCODER_TRAIN."""
    settings = dict(settings)
    weights = {k: settings.pop(k) for k in ("edge_weight", "kl_weight") if k in settings}
    if settings.get("cond", "none") != "none":
        raise UnmixError("an autoencoder is trained without conditions; drop cond=")
    net = {**AUTOENCODER_NET, **(settings.pop("net", None) or {}), "kind": "autoencoder"}
    config = TrainConfig.from_dict({**AUTOENCODER_TRAIN, **settings, "net": net})
    mult = net.get("channel_mult") or [1]
    return config, AutoencoderObjective(int(net["latent_channels"]), 2 ** (len(mult) - 1), **weights)


def stored_objective(run_folder) -> AutoencoderObjective:
    """The objective an autoencoder run was trained with (from its latest checkpoint), to resume it."""
    c = ckpt.open_checkpoint(run_folder)
    stored = c.config.get("objective")
    if not (isinstance(stored, dict) and stored.get("kind") == "autoencoder"):
        raise UnmixError(f"{c.path} is not an autoencoder run; resume it with `unmix train --resume`")
    return AutoencoderObjective.from_dict(stored)


def finish_autoencoder(checkpoint, dataset: Dataset, batch_size: int = 256) -> dict:
    """Write the latent scale of a checkpoint's EMA autoencoder over `dataset` (its training images) into that
    checkpoint's config (the folder rewritten atomically, weights and training state kept, so it still resumes);
    return {"latent_scale", "psnr", "l1", "n"}, the PSNR of the round trip over those images."""
    c = ckpt.open_checkpoint(checkpoint)
    ae = frozen_autoencoder(c.config["net"], c.weights("ema"), c.path)
    images = dataset.batch(torch.arange(len(dataset)))[0]
    ae.config.latent_scale = latent_scale(ae, images, batch_size)
    state = c.training_state() if (c.path / "state.json").is_file() else None
    ckpt.write_folder(c.path, {**c.config, "net": net_config(ae)}, {"model": c.weights("model"), "ema": c.weights("ema")},
                      state, c.step)
    return {"latent_scale": ae.config.latent_scale, **reconstruction_metrics(ae, images, batch_size)}
