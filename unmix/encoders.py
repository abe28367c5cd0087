"""The encoder seam (EDM2's training/encoders.py): every model and every run works through an encoder, so that the
sampler, the trainer's loop and `Model.sample/inpaint/edit` never ask which one they have.

    encoder.encode(images) -> what the denoiser works on      encoder.decode(z) -> images in [-1, 1]

- `Encoder` is the identity, for pixel-space models: every method hands its input back unchanged.
- `AutoencoderEncoder` is latent diffusion (Rombach et al. 2022) on unmix's own autoencoder (unmix.nets.autoencoder):
  latents at 1/f resolution, the mask taken to latent resolution, the known pixels pasted back exactly.
- A foreign VAE (Stable Diffusion's) is one more subclass with the same methods.

`inpaint` and `edit` below are unmix.inpaint and unmix.edit run through any encoder. A latent checkpoint is
self-contained: config.json's "autoencoder" section is the first stage's network config (with its latent_scale),
autoencoder.safetensors its weights (`checkpoint_config` / `checkpoint_weights`, read back by `encoder_of`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch
import torch.nn.functional as F

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


class Encoder:
    """The identity: a pixel-space model's encoder. Subclasses override what their space changes."""

    name = "identity"
    preset: str | None = None  # the training preset an encoder's space asks for (None: the dataset's own)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] to what the denoiser works on; for pixel models, the images themselves."""
        return x

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of `encode`: what a sampler drew back to images (unclamped)."""
        return z

    def latent_shape(self, image_shape) -> tuple[int, ...]:
        """The shape the sampler draws for one image of `image_shape`."""
        return tuple(image_shape)

    def latent_mask(self, mask: torch.Tensor, image_shape) -> torch.Tensor:
        """The fill-in mask [C, H, W] at the resolution the denoiser works on."""
        return mask

    def masked_input(self, y: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """What of an image to be inpainted is encoded (pixels: all of it; the sampler keeps only the known ones)."""
        return y

    def decoding(self, callback):
        """A sampler callback that sees images, whatever space the sampler runs in."""
        return callback

    def encode_dataset(self, dataset: Dataset) -> Dataset:
        """The training data as the denoiser sees it."""
        return dataset

    def require_pixels(self, what: str) -> None:
        """Refuse work that is only meaningful on pixels (pixel-space models pass)."""

    def to(self, device) -> "Encoder":
        """Move any network the encoder holds to `device`, beside the model's; returns the encoder."""
        return self

    def checkpoint_config(self) -> dict:
        """The sections of config.json that rebuild this encoder (none for the identity)."""
        return {}

    def checkpoint_weights(self) -> dict:
        """{file stem: state dict} written beside the network's weights."""
        return {}


class LatentEncoder(Encoder):
    """An encoder to latents `factor` times smaller with `channels` channels: what every autoencoder shares (the
    mask at latent resolution, the masked input, callbacks that see images). Subclasses set factor and channels."""

    factor: int
    channels: int

    def latent_mask(self, mask, image_shape):
        """A latent pixel is filled in when any pixel of its f x f block is (its code would otherwise carry the
        unknown pixels)."""
        full = torch.broadcast_to(mask, tuple(image_shape)).any(0).float()
        small = F.max_pool2d(full[None, None], self.factor)[0, 0].bool()
        if bool(small.all()):
            raise UnmixError(f"every {self.factor}x{self.factor} block of the image touches a masked pixel, so no "
                             "latent is known; mask a region, not scattered pixels")
        return small.expand(self.channels, *small.shape)

    def masked_input(self, y, full):
        """The masked pixels set to the known pixels' mean colour, so nothing of what they held leaks into the code."""
        known = (~full).to(y.dtype)
        fill = (y * known).sum((2, 3), keepdim=True) / known.sum((2, 3), keepdim=True).clamp_min(1)
        return torch.where(full, fill, y)

    def decoding(self, callback):
        if callback is None:
            return None

        def decoded(step, sigma, x, x0_hat):
            return callback(step, sigma, self.decode(x).clamp(-1, 1), self.decode(x0_hat).clamp(-1, 1))

        return decoded

    def require_pixels(self, what):
        raise UnmixError(f"{what} of a latent model would be of its latents, not of the images; it needs a "
                         "pixel-space model")


class AutoencoderEncoder(LatentEncoder):
    """Latent diffusion on an unmix autoencoder (frozen, eval mode); its latents are scaled to unit std."""

    name = "autoencoder"
    preset = "latent"

    def __init__(self, net: Autoencoder):
        self.net = net.eval().requires_grad_(False)

    @property
    def factor(self) -> int:
        """How many pixels a latent pixel stands for, per side."""
        return self.net.config.factor

    @property
    def channels(self) -> int:
        """Channels of a latent."""
        return self.net.config.latent_channels

    def encode(self, x):
        """Images to scaled latents (the posterior means times the latent scale)."""
        return self.net.encode(x)

    def decode(self, z):
        """Scaled latents back to images (unclamped, about [-1, 1])."""
        return self.net.decode(z)

    def latent_shape(self, image_shape):
        """The latent of the image size the autoencoder was trained on, (channels, side / factor, side / factor)."""
        return tuple(self.net.config.latent_shape())

    def encode_dataset(self, dataset):
        return latent_dataset(dataset, self.net)

    def to(self, device):
        """Move the autoencoder to `device`; returns the encoder."""
        self.net.to(device)
        return self

    def checkpoint_config(self):
        return {"autoencoder": net_config(self.net)}

    def checkpoint_weights(self):
        return {"autoencoder": self.net.state_dict()}


# -- inpainting and image-to-image through any encoder ----------------------------------------------------------
@torch.no_grad()
def inpaint(encoder: Encoder, denoiser, image: torch.Tensor, mask, n: int | None = None, return_nfe: bool = False,
            **options):
    """n completions of `image` [C, H, W] (or one per row of [n, C, H, W]) where `mask` is True, sampled in the
    encoder's space by unmix.inpaint.inpaint (its options: method, sampler, nfe, generator, cond, ...); decoded,
    clamped, and the known pixels pasted back, so they come out exactly as given. A `callback` sees images."""
    y = image_batch(image, n)
    mask = check_mask(mask, y.shape[1:]).to(y.device)
    full = torch.broadcast_to(mask, y.shape)
    z_known = encoder.encode(encoder.masked_input(y, full))
    if options.get("callback") is not None:
        options["callback"] = encoder.decoding(options["callback"])
    zmask = encoder.latent_mask(mask, y.shape[1:]).to(z_known.device)
    z, nfe = fill_in(denoiser, z_known, zmask, z_known.shape[0], return_nfe=True, **options)
    out = torch.where(full, encoder.decode(z).to(y.dtype).clamp(-1, 1), y)
    return (out, nfe) if return_nfe else out


@torch.no_grad()
def edit(encoder: Encoder, denoiser, image: torch.Tensor, strength: float, n: int | None = None,
         return_nfe: bool = False, **options):
    """SDEdit in the encoder's space: encode, noise to `strength`, denoise with unmix.edit.edit (its options),
    decode. Where no noise is added (strength 0) the images come back unchanged, not their round trip."""
    check_strength(strength)
    x = image_batch(image, n)
    if options.get("callback") is not None:
        options["callback"] = encoder.decoding(options["callback"])
    z, nfe = sdedit(denoiser, encoder.encode(x), strength, return_nfe=True, **options)
    out = x.clone() if nfe == 0 else encoder.decode(z).to(x.dtype)
    return (out, nfe) if return_nfe else out


# -- unmix's autoencoder: pairing, batches, scale, quality -----------------------------------------------------
def ae_config(config) -> AutoencoderConfig:
    """An AutoencoderConfig from a config, an Autoencoder or a dict (such as config.json's "autoencoder" section;
    keys it does not know, such as "kind", are ignored)."""
    if isinstance(config, AutoencoderConfig):
        return config
    if isinstance(config, Autoencoder):
        return config.config
    known = {f.name for f in fields(AutoencoderConfig)}
    return AutoencoderConfig(**{k: v for k, v in dict(config).items() if k in known})


def check_autoencoder(autoencoder, data_shape, latent_in_channels: int | None = None) -> None:
    """One clear error when an autoencoder (net, config or config dict) does not fit images of `data_shape`
    [C, H, W], or a latent network taking `latent_in_channels` channels."""
    cfg = ae_config(autoencoder)
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


# -- reading encoders back from checkpoints --------------------------------------------------------------------
def frozen_autoencoder(config, weights: dict | None, where) -> Autoencoder:
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


def encoder_of(c: ckpt.Checkpoint) -> Encoder:
    """A model checkpoint's encoder: its own autoencoder (config.json "autoencoder" + autoencoder.safetensors) for a
    latent model, else the identity."""
    if c.config.get("autoencoder") is None:
        return Encoder()
    ae = frozen_autoencoder(c.config["autoencoder"], load_safetensors(c.path / "autoencoder.safetensors"), c.path)
    shape, net = (c.config.get("data") or {}).get("shape"), c.config["net"]
    try:
        check_autoencoder(ae, shape, net.get("in_channels"))
    except (UnmixError, TypeError, ValueError) as e:
        raise UnmixError(f"{c.path}: the autoencoder does not fit this model ({e}); the checkpoint is damaged") from None
    return AutoencoderEncoder(ae)


def load_autoencoder(path) -> Autoencoder:
    """The autoencoder of a `train-autoencoder` run or checkpoint folder (its EMA weights), or a latent model's."""
    c = ckpt.open_checkpoint(path)
    if c.config.get("autoencoder") is not None:
        return encoder_of(c).net
    kind = c.config["net"].get("kind")
    if kind != "autoencoder":
        raise UnmixError(f"{c.path} holds a {kind} diffusion network, not an autoencoder; latent= takes the folder "
                         "of an autoencoder run (unmix train-autoencoder)")
    return frozen_autoencoder(c.config["net"], c.weights("ema"), c.path)


def encoder_for_run(latent: str | None, stored: ckpt.Checkpoint | None) -> Encoder:
    """The encoder a training run works through: the stored latent model's own when resuming or fine-tuning one,
    else the autoencoder in the folder `latent`, else the identity (a pixel-space run, or an autoencoder's)."""
    if stored is not None and stored.config.get("autoencoder") is not None:
        return encoder_of(stored)
    if not latent:
        return Encoder()
    if stored is not None and stored.config["net"].get("kind") != "autoencoder":
        raise UnmixError(f"{stored.path} is a pixel-space model; latent= trains on latents, so start without init= "
                         "(or init= a latent model)")
    return AutoencoderEncoder(load_autoencoder(latent))


# -- the second stage's data ----------------------------------------------------------------------------------
@dataclass
class LatentDataset(Dataset):
    """A dataset's images encoded once by an autoencoder and kept in memory: items are the latents (float, unit
    std), labels / class names / captions are the images'. `describe` is the images' description (a latent
    model's data are its images: eval, the web page and inpainting see image shapes)."""

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
    return LatentDataset(images.name, z, images.labels, images.class_names, images.info, images.captions,
                         images=images.describe())
