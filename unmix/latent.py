"""Latent diffusion (Rombach et al. 2022): an autoencoder maps images to small latents and back, and the diffusion
runs on the latents. Samplers never know: a latent model is a denoiser over latents plus `decode` at the end.

This module holds what both stages share, as pure functions over an autoencoder (unmix.nets.autoencoder) and a
denoiser:

- `AutoencoderObjective`: what one training step of the first stage optimises (the trainer's objective
  contract, see unmix.training.objectives): L1 reconstruction, an edge term, and a light KL to N(0, I);
- `latent_scale`: the per-dataset factor that brings the latents to unit std (Stable Diffusion's 0.18215);
- `encode_images` / `decode_latents` in batches, `check_autoencoder` for pairing one with data and a latent net;
- `reconstruction_metrics`: PSNR of an autoencoder's round trip;
- `latent_inpaint` and `latent_edit`: unmix.inpaint and unmix.edit run on the latents, with the known pixels
  pasted back exactly in pixel space at the end;
- the first stage as a run: `autoencoder_config` (settings -> TrainConfig + objective for unmix.training.trainer.start),
  `finish_autoencoder` (the latent scale written into the final checkpoint), `load_autoencoder`;
- the second stage's data: `latent_dataset` encodes a dataset once (kept in memory), `autoencoder_for_run`
  picks the autoencoder a run trains on (a latent model's own copy when resuming or fine-tuning).

A latent model's checkpoint is self-contained: config.json's "autoencoder" section is the first stage's network
config (with its latent_scale) and autoencoder.safetensors its weights, beside the diffusion network's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from unmix.control import image_batch
from unmix.data import Dataset
from unmix.edit import check_strength
from unmix.edit import edit as sdedit
from unmix.errors import UnmixError
from unmix.inpaint import check_mask
from unmix.inpaint import inpaint as fill_in
from unmix.nets import build_net, net_config
from unmix.nets.autoencoder import Autoencoder, AutoencoderConfig
from unmix.store import checkpoint as ckpt
from unmix.store.files import load_safetensors
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
        cfg = _ae_config(config)
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


# -- using a trained autoencoder ------------------------------------------------------------------------------
def _ae_config(config) -> AutoencoderConfig:
    if isinstance(config, AutoencoderConfig):
        return config
    if isinstance(config, Autoencoder):
        return config.config
    known = {f.name for f in fields(AutoencoderConfig)}
    return AutoencoderConfig(**{k: v for k, v in dict(config).items() if k in known})


def check_autoencoder(autoencoder, data_shape, latent_in_channels: int | None = None) -> None:
    """One clear error when an autoencoder (net, config or config dict) does not fit images of `data_shape`
    [C, H, W], or a latent network taking `latent_in_channels` channels."""
    cfg = _ae_config(autoencoder)
    c, h, w = (int(v) for v in data_shape)
    if c != cfg.in_channels or h != cfg.image_size or w != cfg.image_size:
        raise UnmixError(f"the autoencoder was trained on {cfg.in_channels}x{cfg.image_size}x{cfg.image_size} "
                         f"images, the data is {c}x{h}x{w}; train an autoencoder for this data (or pick size= "
                         f"{cfg.image_size})")
    if latent_in_channels is not None and latent_in_channels != cfg.latent_channels:
        raise UnmixError(f"the latent network takes {latent_in_channels} channels, the autoencoder gives "
                         f"{cfg.latent_channels}; use the autoencoder the latent model was trained with")


@torch.no_grad()
def encode_images(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Latents (scaled, as `Autoencoder.encode`) of images [N, C, H, W] in [-1, 1], in batches."""
    device = next(autoencoder.parameters()).device
    return torch.cat([autoencoder.encode(images[i:i + batch_size].to(device)).float().cpu()
                      for i in range(0, len(images), batch_size)])


@torch.no_grad()
def decode_latents(autoencoder: Autoencoder, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images [N, C, H, W] clamped to [-1, 1] from latents, in batches."""
    device = next(autoencoder.parameters()).device
    return torch.cat([autoencoder.decode(latents[i:i + batch_size].to(device)).float().clamp(-1, 1).cpu()
                      for i in range(0, len(latents), batch_size)])


@torch.no_grad()
def latent_scale(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 256) -> float:
    """1 / std of the raw latents (posterior means) over `images`: Stable Diffusion's scaling factor, so that the
    diffusion sees unit-variance latents whatever the first stage learned. Store it as config.latent_scale."""
    device = next(autoencoder.parameters()).device
    means = torch.cat([autoencoder.moments(images[i:i + batch_size].to(device))[0].double().cpu()
                       for i in range(0, len(images), batch_size)])
    std = float(means.std())
    if not (math.isfinite(std) and std > 0):
        raise UnmixError("the autoencoder's latents have no spread over these images (std 0 or not finite); "
                         "it is untrained or diverged")
    return 1.0 / std


@torch.no_grad()
def reconstruction_metrics(autoencoder: Autoencoder, images: torch.Tensor, batch_size: int = 256) -> dict:
    """{"psnr": mean per-image PSNR in dB (pixels in [0, 1]), "l1": mean absolute error in [-1, 1] units}."""
    recon = decode_latents(autoencoder, encode_images(autoencoder, images, batch_size), batch_size)
    err = recon.double() - images.double().clamp(-1, 1)
    mse = (err / 2).pow(2).flatten(1).mean(1).clamp_min(1e-12)
    return {"psnr": float((10 * torch.log10(1 / mse)).mean()), "l1": float(err.abs().mean()), "n": len(images)}


# -- inpainting and image-to-image through the latents ---------------------------------------------------------
def latent_mask(mask: torch.Tensor, image_shape, autoencoder) -> torch.Tensor:
    """The pixel mask [C, H, W] (True = fill in) taken to latent resolution [Cz, H/f, W/f]: a latent pixel is
    filled in when any pixel of its f x f block is (its code would otherwise carry the unknown pixels)."""
    cfg = _ae_config(autoencoder)
    full = torch.broadcast_to(mask, tuple(image_shape)).any(0).float()
    small = F.max_pool2d(full[None, None], cfg.factor)[0, 0].bool()
    if bool(small.all()):
        raise UnmixError(f"every {cfg.factor}x{cfg.factor} block of the image touches a masked pixel, so no latent "
                         "is known; mask a region, not scattered pixels")
    return small.expand(cfg.latent_channels, *small.shape)


@torch.no_grad()
def latent_inpaint(denoiser, autoencoder: Autoencoder, image: torch.Tensor, mask, n: int | None = None,
                   return_nfe: bool = False, **options):
    """n completions of `image` [C, H, W] (or one per row of [n, C, H, W]) where `mask` is True, sampled in latent
    space with unmix.inpaint.inpaint (its options: method, sampler, nfe, generator, cond, sigma_min/max, ...).

    The masked pixels are set to the known pixels' mean colour before encoding (so nothing of what they held
    leaks into the code), the mask is taken to latent resolution by `latent_mask`, the latents are completed,
    decoded, and the known pixels pasted back: they come out exactly as given. A `callback` sees decoded images."""
    y = image_batch(image, n)
    mask = check_mask(mask, y.shape[1:]).to(y.device)
    full = torch.broadcast_to(mask, y.shape)
    known = (~full).to(y.dtype)
    fill = (y * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
    z_known = autoencoder.encode(torch.where(full, fill, y))
    if options.get("callback") is not None:
        options["callback"] = decoding_callback(options["callback"], autoencoder)
    zmask = latent_mask(mask, y.shape[1:], autoencoder).to(z_known.device)
    z, nfe = fill_in(denoiser, z_known, zmask, z_known.shape[0], return_nfe=True, **options)
    out = torch.where(full, autoencoder.decode(z).to(y.dtype).clamp(-1, 1), y)
    return (out, nfe) if return_nfe else out


@torch.no_grad()
def latent_edit(denoiser, autoencoder: Autoencoder, image: torch.Tensor, strength: float, n: int | None = None,
                return_nfe: bool = False, **options):
    """SDEdit in latent space: encode, noise to `strength`, denoise with unmix.edit.edit (its options), decode.
    Strength 0 returns the images unchanged (not their round trip through the autoencoder). A `callback` sees
    decoded images."""
    check_strength(strength)
    x = image_batch(image, n)
    if strength == 0:
        return (x.clone(), 0) if return_nfe else x.clone()
    if options.get("callback") is not None:
        options["callback"] = decoding_callback(options["callback"], autoencoder)
    z, nfe = sdedit(denoiser, autoencoder.encode(x), strength, return_nfe=True, **options)
    out = autoencoder.decode(z).to(x.dtype).clamp(-1, 1)
    return (out, nfe) if return_nfe else out


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
    ae = _autoencoder(c.config["net"], c.weights("ema"), c.path)
    images = dataset.batch(torch.arange(len(dataset)))[0]
    ae.config.latent_scale = latent_scale(ae, images, batch_size)
    state = c.training_state() if (c.path / "state.json").is_file() else None
    ckpt.write_folder(c.path, {**c.config, "net": net_config(ae)}, {"model": c.weights("model"), "ema": c.weights("ema")},
                      state, c.step)
    return {"latent_scale": ae.config.latent_scale, **reconstruction_metrics(ae, images, batch_size)}


def _autoencoder(config, weights: dict | None, where) -> Autoencoder:
    """An eval-mode, frozen autoencoder from its network config and weights; a damaged one is one clear error."""
    if not (isinstance(config, dict) and config.get("kind") == "autoencoder"):
        raise UnmixError(f"{where}/config.json has no usable autoencoder network config; the checkpoint is damaged")
    try:
        ae = build_net(config)
    except UnmixError as e:
        raise UnmixError(f"{where}/config.json: {e}") from None
    except (TypeError, ValueError) as e:
        raise UnmixError(f"{where}/config.json: the autoencoder has a setting of the wrong type or value ({e}); "
                         "the checkpoint is damaged") from None
    if weights is None:
        raise UnmixError(f"{where}/autoencoder.safetensors is missing or unreadable; the checkpoint is damaged")
    try:
        ae.load_state_dict(weights)
    except RuntimeError as e:
        raise UnmixError(f"{where}: the autoencoder's weights do not match its config "
                         f"({str(e).splitlines()[0]})") from None
    return ae.eval().requires_grad_(False)


def autoencoder_of(c: ckpt.Checkpoint) -> Autoencoder | None:
    """A latent model checkpoint's own autoencoder (config.json "autoencoder" + autoencoder.safetensors); None
    for a pixel-space model."""
    if c.config.get("autoencoder") is None:
        return None
    ae = _autoencoder(c.config["autoencoder"], load_safetensors(c.path / "autoencoder.safetensors"), c.path)
    shape, net = (c.config.get("data") or {}).get("shape"), c.config["net"]
    try:
        check_autoencoder(ae, shape, net.get("in_channels"))
    except (UnmixError, TypeError, ValueError) as e:
        raise UnmixError(f"{c.path}: the autoencoder does not fit this model ({e}); the checkpoint is damaged") from None
    return ae


def load_autoencoder(path) -> Autoencoder:
    """The autoencoder of a `train-autoencoder` run or checkpoint folder (its EMA weights), or a latent model's."""
    c = ckpt.open_checkpoint(path)
    if c.config.get("autoencoder") is not None:
        return autoencoder_of(c)
    kind = c.config["net"].get("kind")
    if kind != "autoencoder":
        raise UnmixError(f"{c.path} holds a {kind} diffusion network, not an autoencoder; latent= takes the folder "
                         "of an autoencoder run (unmix train-autoencoder)")
    return _autoencoder(c.config["net"], c.weights("ema"), c.path)


def autoencoder_for_run(latent: str | None, stored: ckpt.Checkpoint | None) -> Autoencoder | None:
    """The autoencoder a training run works through: the stored latent model's own copy when resuming or
    fine-tuning one, else the one in the folder `latent`; None for a pixel-space run (or an autoencoder's)."""
    if stored is not None and stored.config.get("autoencoder") is not None:
        return autoencoder_of(stored)
    if not latent:
        return None
    if stored is not None and stored.config["net"].get("kind") != "autoencoder":
        raise UnmixError(f"{stored.path} is a pixel-space model; latent= trains on latents, so start without init= "
                         "(or init= a latent model)")
    return load_autoencoder(latent)


# -- the second stage's data ----------------------------------------------------------------------------------
@dataclass
class LatentDataset(Dataset):
    """A dataset's images encoded once by an autoencoder and kept in memory: items are the latents (float, unit
    std), labels / class names / captions are the images'. `describe` is the images' description (a latent
    model's data are its images: eval, the web page and inpainting see image shapes) and `autoencoder` goes into
    every checkpoint of the run. Its name, "latent", picks the trainer's latent preset."""

    autoencoder: Autoencoder | None = None
    images: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return dict(self.images)


def latent_dataset(images: Dataset, autoencoder: Autoencoder, batch_size: int = 256) -> LatentDataset:
    """Encode every image of `images` (checked against the autoencoder's channels and size) once."""
    if not images.is_image:
        raise UnmixError(f"latent diffusion needs images; {images.name} gives items of shape {list(images.shape)}")
    check_autoencoder(autoencoder, images.shape)
    z = torch.cat([encode_images(autoencoder, images.batch(idx)[0], batch_size)
                   for idx in torch.arange(len(images)).split(batch_size)])
    return LatentDataset("latent", z, images.labels, images.class_names, images.info, images.captions,
                         autoencoder=autoencoder, images=images.describe())


def decoding_callback(callback, autoencoder: Autoencoder):
    """A sampler callback for a latent model: `callback(step, sigma, x, x0_hat)` sees the decoded images of the
    noisy latent and of the denoised estimate (clamped to [-1, 1]), as a pixel model's callback would."""
    if callback is None:
        return None

    def decoded(step, sigma, x, x0_hat):
        return callback(step, sigma, autoencoder.decode(x).clamp(-1, 1), autoencoder.decode(x0_hat).clamp(-1, 1))

    return decoded
