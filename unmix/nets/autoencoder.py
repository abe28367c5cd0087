"""A small convolutional autoencoder for latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis
with Latent Diffusion Models", the KL-regularised first stage), rebuilt from a dataclass config.

The encoder halves the image at each level after the first (factor f = 2^(levels-1): 32x32x3 -> 8x8xC at f = 4)
and ends in the mean and log-variance of a diagonal Gaussian per latent pixel; the decoder mirrors it with
nearest-neighbour upsampling. Both are residual blocks with GroupNorm, as in the U-Net, without the noise
embedding. The last conv of every residual branch starts at zero, so a fresh block is the identity.

Latents as users see them (`encode`, `decode`) are the encoder's mean times `latent_scale`, the per-dataset
factor that brings them to unit standard deviation (Stable Diffusion's 0.18215, computed for each dataset by
unmix.encoders.latent_scale and stored in this config). `forward` works on the raw latents: it is what training
calls, through DDP when there are several processes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unmix.errors import UnmixError

LOGVAR_RANGE = (-30.0, 20.0)  # as Stable Diffusion's DiagonalGaussianDistribution: keeps exp() finite


@dataclass
class AutoencoderConfig:
    in_channels: int = 3
    latent_channels: int = 4
    channels: int = 32  # width at full resolution
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per level; factor = 2^(len - 1)
    num_res_blocks: int = 1  # per level, in the encoder and the decoder
    groups: int = 32  # GroupNorm groups (reduced to divide the width)
    image_size: int = 32  # the side of the images it was trained on (checked against the data it is used with)
    latent_scale: float = 1.0  # latents = encoder mean * latent_scale (unit std over the training set)

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.in_channels < 1 or self.latent_channels < 1 or self.channels < 1:
            raise UnmixError("an autoencoder needs in_channels, latent_channels and channels >= 1")
        if not self.channel_mult or min(self.channel_mult) < 1 or self.num_res_blocks < 1:
            raise UnmixError("an autoencoder needs a non-empty channel_mult of positive ints and num_res_blocks >= 1")
        if self.image_size % self.factor:
            raise UnmixError(f"an autoencoder with downsampling factor {self.factor} needs an image_size divisible "
                             f"by it, got {self.image_size}")
        if not (math.isfinite(self.latent_scale) and self.latent_scale > 0):
            raise UnmixError(f"latent_scale must be a finite number > 0, got {self.latent_scale}")

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    def latent_shape(self) -> tuple[int, int, int]:
        """The shape of one latent (C, H, W) for the image size it was trained on."""
        side = self.image_size // self.factor
        return self.latent_channels, side, side


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, ch), ch)


class Block(nn.Module):
    """norm-SiLU-conv twice with a skip; the second conv starts at zero."""

    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Autoencoder(nn.Module):
    """forward(x, eps) -> (reconstruction, mean, logvar) on raw latents; encode(x) -> latents; decode(z) -> x."""

    def __init__(self, config: AutoencoderConfig):
        super().__init__()
        self.config = cfg = config
        chs = [cfg.channels * m for m in cfg.channel_mult]
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, chs[0], 3, padding=1)]
        cur = chs[0]
        for i, ch in enumerate(chs):
            for _ in range(cfg.num_res_blocks):
                enc.append(Block(cur, ch, cfg.groups))
                cur = ch
            if i < len(chs) - 1:
                enc.append(nn.Conv2d(cur, cur, 3, stride=2, padding=1))
        enc += [_norm(cur, cfg.groups), nn.SiLU(), nn.Conv2d(cur, 2 * cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chs[-1], 3, padding=1)]
        cur = chs[-1]
        for i in reversed(range(len(chs))):
            for _ in range(cfg.num_res_blocks):
                dec.append(Block(cur, chs[i], cfg.groups))
                cur = chs[i]
            if i > 0:
                dec.append(Upsample(cur))
        dec += [_norm(cur, cfg.groups), nn.SiLU(), nn.Conv2d(cur, cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    @property
    def factor(self) -> int:
        return self.config.factor

    def _check_images(self, x: torch.Tensor) -> None:
        c, f = self.config.in_channels, self.factor
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] % f or x.shape[3] % f:
            raise UnmixError(f"this autoencoder takes images [N, {c}, H, W] with H and W divisible by {f}, "
                             f"got {list(x.shape)}")

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of the raw latent posterior q(z | x), each [N, latent_channels, H/f, W/f]."""
        self._check_images(x)
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None):
        """Reconstruct x through z = mean + exp(logvar / 2) * eps (the posterior mean when eps is None)."""
        mean, logvar = self.moments(x)
        z = mean if eps is None else mean + (0.5 * logvar).exp() * eps.to(mean.dtype)
        return self.decoder(z), mean, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latents of images [N, C, H, W] in [-1, 1]: the posterior mean, scaled to unit std."""
        return self.moments(x)[0] * self.config.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (unclamped, about [-1, 1]) from latents as `encode` gives them."""
        c = self.config.latent_channels
        if z.ndim != 4 or z.shape[1] != c:
            raise UnmixError(f"this autoencoder decodes latents [N, {c}, h, w], got {list(z.shape)}")
        return self.decoder(z / self.config.latent_scale)
