"""Which emoji is this? A classifier of the emoji dataset's items (one class per emoji), for prompt adherence.

Every emoji is one 32x32 image, so the classifier learns each class from random views of that one image:
sub-pixel shifts (up to 2 px), slight zoom, Gaussian blur, pixel noise, and small brightness, contrast and
saturation changes - the defects a diffusion model's samples have. Hue never changes (it tells the red heart
from the green heart), and nothing is mirrored (arrows). Without such views a network would memorise exact
pixels and call every slightly blurred sample "unknown"; with them it ranks the emoji a sample resembles.

Its robustness is measured, not assumed: `IDENTITY_CHECK` views (2 px shifts and blur sigma 1, drawn with a seed
the training never saw) must be recognised; the score is stored beside the weights.

Training is deterministic (fixed seed, one thread); the network is cached with safetensors under
`unmix.store.files.cache_dir()/metrics`, keyed by the images, the emoji names and VERSION.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from unmix.data import load_dataset
from unmix.metrics import cache
from unmix.store.files import load_safetensors, read_metadata, save_safetensors

VERSION = "1"
SEED = 0
SIZE = 32
STEPS = 1500
BATCH = 128
LR = 3e-3
MAX_SHIFT = 2.0  # pixels
BLUR_SIGMA = (0.0, 1.2)  # Gaussian blur, pixels
IDENTITY_CHECK = {"shift": 2.0, "blur": 1.0}  # the held-out views the stored accuracy is measured on


@dataclass(frozen=True)
class IdentityNetConfig:
    num_classes: int
    size: int = SIZE
    width: int = 16
    feature_dim: int = 256


class IdentityNet(nn.Module):
    """Three stride-2 convolutions (32 -> 4 px) with GroupNorm and SiLU, a 3x3 conv, a linear layer to
    `feature_dim` features and a linear head over the emoji. Input: [N, 3, H, W] in [-1, 1], resized to `size`."""

    def __init__(self, config: IdentityNetConfig):
        super().__init__()
        self.config = config
        w = config.width

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.GroupNorm(8, cout), nn.SiLU()]

        side = config.size // 8
        self.body = nn.Sequential(*block(3, w, 1), *block(w, 2 * w, 2), *block(2 * w, 4 * w, 2),
                                  *block(4 * w, 4 * w, 2), *block(4 * w, 4 * w, 1), nn.Flatten(),
                                  nn.Linear(4 * w * side * side, config.feature_dim), nn.SiLU(), nn.Dropout(0.2))
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.config.size or x.shape[-2] != self.config.size:
            x = F.interpolate(x.float(), size=(self.config.size,) * 2, mode="area" if x.shape[-1] > self.config.size
                              else "bilinear", align_corners=None if x.shape[-1] > self.config.size else False)
        return self.head(self.body(x))


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image [N, C, H, W] blurred with its own Gaussian (sigma [N], pixels; 0 = unchanged), edges replicated."""
    n, c, h, w = x.shape
    radius = max(1, math.ceil(3 * float(sigma.max())))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k = torch.where(sigma[:, None] > 0, k, (t == 0).to(x.dtype)[None].expand_as(k))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)  # [N * C, taps]
    y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def random_views(x: torch.Tensor, generator: torch.Generator, shift: float = MAX_SHIFT,
                 blur: tuple[float, float] = BLUR_SIGMA, jitter: bool = True) -> torch.Tensor:
    """Random views of images [N, 3, H, W] in [-1, 1] on a white background: shifted by up to `shift` pixels
    (sub-pixel, bilinear), zoomed by 0.92..1.08, blurred with sigma uniform in `blur`, and with `jitter` also
    brightness +-0.1, contrast and saturation x0.85..1.15 and pixel noise of std up to 0.08."""
    n, _, h, w = x.shape
    u = torch.rand(n, 10, generator=generator, dtype=torch.float32)
    zoom = 0.92 + 0.16 * u[:, 0] if jitter else torch.ones(n)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / zoom
    theta[:, 0, 2] = (2 * u[:, 1] - 1) * shift * 2 / w
    theta[:, 1, 2] = (2 * u[:, 2] - 1) * shift * 2 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # white outside the picture: shift towards background, sample, shift back (grid_sample pads with zeros)
    y = F.grid_sample(x - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + 1
    y = gaussian_blur(y, blur[0] + (blur[1] - blur[0]) * u[:, 3])
    if jitter:
        grey = y.mean(1, keepdim=True)
        y = grey + (y - grey) * (0.85 + 0.3 * u[:, 4, None, None, None])
        y = (y * (0.85 + 0.3 * u[:, 5, None, None, None]) + 0.2 * (u[:, 6, None, None, None] - 0.5))
        y = y + 0.08 * u[:, 7, None, None, None] * torch.randn(y.shape, generator=generator)
    return y.clamp(-1, 1)


@contextlib.contextmanager
def _deterministic(seed: int):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def train_identity_net(images: torch.Tensor, steps: int = STEPS, batch: int = BATCH, seed: int = SEED,
                       log_every: int = 0) -> tuple[IdentityNet, float]:
    """Train the classifier on random views of `images` [K, 3, H, W] (class k = image k) with label smoothing
    0.1 and a one-cycle AdamW schedule; return it (eval mode) and its top-1 accuracy on IDENTITY_CHECK views."""
    k = len(images)
    with _deterministic(seed):
        net = IdentityNet(IdentityNetConfig(k, images.shape[-1]))
        opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
        g = torch.Generator().manual_seed(seed)
        net.train()
        order = torch.empty(0, dtype=torch.long)
        for step in range(steps):
            if len(order) < batch:  # every emoji equally often: shuffled passes over all of them
                order = torch.cat([order, torch.randperm(k, generator=g)])
            idx, order = order[:batch], order[batch:]
            loss = F.cross_entropy(net(random_views(images[idx], g)), idx, label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if log_every and (step + 1) % log_every == 0:
                print(f"identity net step {step + 1}/{steps}: loss {loss.item():.3f}", file=sys.stderr)
        net.eval()
    return net, check_accuracy(net, images, seed + 1)


@torch.no_grad()
def check_accuracy(net: IdentityNet, images: torch.Tensor, seed: int) -> float:
    """Top-1 accuracy on one IDENTITY_CHECK view of every image (2 px shifts and blur sigma 1, no jitter)."""
    g = torch.Generator().manual_seed(seed)
    s, b = IDENTITY_CHECK["shift"], IDENTITY_CHECK["blur"]
    views = random_views(images, g, shift=s, blur=(b, b), jitter=False)
    return float((logits(net, views).argmax(1) == torch.arange(len(images))).float().mean())


@torch.no_grad()
def logits(net: IdentityNet, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    """Class scores [N, K] for images [N, 3, H, W] in [-1, 1]."""
    images = images.float()
    return torch.cat([net(images[i:i + batch]) for i in range(0, len(images), batch)])


@dataclass(frozen=True)
class EmojiIndex:
    """Emoji a classifier knows, in dataset order: short names, keywords, Unicode groups and images."""

    names: tuple[str, ...]
    keywords: tuple[tuple[str, ...], ...]
    groups: tuple[str, ...]
    images: torch.Tensor  # [K, 3, 32, 32] float32 in [-1, 1]

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, items) -> EmojiIndex:
        """The emoji at positions `items` (for small classifiers in tests)."""
        items = [int(i) for i in items]
        return EmojiIndex(tuple(self.names[i] for i in items), tuple(self.keywords[i] for i in items),
                          tuple(self.groups[i] for i in items), self.images[items])


@lru_cache(maxsize=1)
def emoji_index() -> EmojiIndex:
    """Every emoji of the `emoji` dataset at 32x32."""
    ds = load_dataset("emoji", SIZE)
    images, _ = ds.batch(torch.arange(len(ds)))
    return EmojiIndex(tuple(ds.info["short_names"]), tuple(tuple(k) for k in ds.info["keywords"]),
                      tuple(ds.info["groups"]), images)


@dataclass(frozen=True)
class EmojiIdentity:
    """A trained classifier with the emoji it tells apart; `check_accuracy` as measured by check_accuracy()."""

    net: IdentityNet
    index: EmojiIndex
    check_accuracy: float

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        """p(emoji | image) [N, K] for images [N, 3, H, W] in [-1, 1]."""
        return logits(self.net, images).softmax(1)


def train_emoji_identity(index: EmojiIndex, steps: int = STEPS, seed: int = SEED) -> EmojiIdentity:
    """A classifier of `index`'s emoji, trained now (not cached)."""
    net, accuracy = train_identity_net(index.images, steps, seed=seed)
    return EmojiIdentity(net, index, accuracy)


@lru_cache(maxsize=1)
def emoji_identity() -> EmojiIdentity:
    """The cached classifier of every emoji, trained (deterministically; about 15 CPU minutes on one busy core)
    if missing or stale."""
    index = emoji_index()
    path = cache.metrics_dir() / f"emoji-identity-v{VERSION}.safetensors"
    expect = {"version": VERSION, "data_sha256": cache.fingerprint(index.images),
              "names": json.dumps(index.names, ensure_ascii=False)}
    state = load_safetensors(path, expect)
    if state is not None:
        meta = read_metadata(path)
        net = IdentityNet(IdentityNetConfig(**json.loads(meta["config"])))
        net.load_state_dict(state)
        return EmojiIdentity(net.eval(), index, float(meta["check_accuracy"]))
    print(f"training the emoji identity classifier ({len(index)} emoji, {STEPS} steps); once, then cached "
          f"in {path.parent}", file=sys.stderr)
    identity = train_emoji_identity(index)
    meta = {**expect, "config": json.dumps(asdict(identity.net.config)), "seed": str(SEED), "steps": str(STEPS),
            "check_accuracy": f"{identity.check_accuracy:.4f}", "check_views": json.dumps(IDENTITY_CHECK)}
    save_safetensors(path, identity.net.state_dict(), meta, make_parents=True)
    return identity


__all__ = ["EmojiIdentity", "EmojiIndex", "IdentityNet", "IdentityNetConfig", "check_accuracy", "emoji_identity",
           "emoji_index", "gaussian_blur", "logits", "random_views", "train_emoji_identity", "train_identity_net"]
