"""The feature space for image metrics: a small classifier trained once per bundled dataset.

Inception features know nothing about 8x8 digits, and nothing may be downloaded, so each dataset gets its
own small CNN, trained on that dataset's labels with a fixed seed on one thread (bit-identical rebuilds on
the same machine), saved with safetensors in the user cache folder. Its penultimate layer is the feature
space. The reference features (every image of the dataset) are cached beside it. Both are keyed by a
fingerprint of the data and a version number, so a changed dataset or network means a rebuild.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unmix.data import load_dataset
from unmix.errors import UnmixError
from unmix.metrics import cache

VERSION = "1"
SEED = 0


@dataclass(frozen=True)
class FeatureNetConfig:
    in_channels: int
    size: int  # images are size x size
    num_classes: int
    width: int = 32
    max_width: int = 128
    feature_dim: int = 64


class FeatureNet(nn.Module):
    """Strided convs down to 2x2, then a linear layer to `feature_dim` features and a linear classifier head."""

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        self.config = config
        ch, size = config.width, config.size
        layers: list[nn.Module] = [nn.Conv2d(config.in_channels, ch, 3, padding=1), nn.SiLU()]
        while size > 2:
            out = min(2 * ch, config.max_width)
            layers += [nn.Conv2d(ch, out, 3, stride=2, padding=1), nn.GroupNorm(8, out), nn.SiLU()]
            ch, size = out, (size + 1) // 2
        layers += [nn.Flatten(), nn.Linear(ch * size * size, config.feature_dim), nn.SiLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class LabelledImages:
    name: str
    images: torch.Tensor  # [N, C, H, W] float32 in [-1, 1]
    labels: torch.Tensor  # [N] long
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])


FEATURE_DATASETS = ("digits", "emoji")  # bundled, labelled image sets (emoji: labelled by Unicode group)


def image_dataset(name: str) -> LabelledImages:
    """The labelled images a feature space is trained on and measured against."""
    if name not in FEATURE_DATASETS:
        raise UnmixError(f"no feature network for dataset {name!r}; valid: {', '.join(FEATURE_DATASETS)}")
    ds = load_dataset(name)
    images, labels = ds.batch(torch.arange(len(ds)))
    return LabelledImages(name, images, labels, ds.num_classes)


@contextlib.contextmanager
def _deterministic(seed: int):
    """One thread and a private, seeded global RNG: the same weights on every rebuild, caller's state untouched."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def _split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed 80/20 train/validation split of n items."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * n)
    return perm[:cut], perm[cut:]


def train_feature_net(data: LabelledImages, epochs: int = 30, batch: int = 64, seed: int = SEED) -> tuple[FeatureNet, float]:
    """Train the classifier on 80% of the data; return it (eval mode) and its validation accuracy."""
    c, h, w = data.image_shape
    if h != w:
        raise UnmixError(f"feature networks need square images, got {h}x{w}")
    train_idx, val_idx = _split(len(data.labels), seed)
    with _deterministic(seed):
        net = FeatureNet(FeatureNetConfig(c, h, data.num_classes))
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
        steps = epochs * math.ceil(len(train_idx) / batch)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
        g = torch.Generator().manual_seed(seed)
        net.train()
        for _ in range(epochs):
            order = train_idx[torch.randperm(len(train_idx), generator=g)]
            for i in range(0, len(order), batch):
                idx = order[i:i + batch]
                loss = F.cross_entropy(net(data.images[idx]), data.labels[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(data.images[val_idx]).argmax(1) == data.labels[val_idx]).float().mean())
    return net, accuracy


def _paths(name: str):
    folder = cache.cache_dir() / "metrics"
    return folder / f"{name}-featnet-v{VERSION}.safetensors", folder / f"{name}-reference-v{VERSION}.safetensors"


def feature_net(name: str, data: LabelledImages | None = None) -> FeatureNet:
    """The cached feature network for a dataset, trained (deterministically) and cached if missing or stale."""
    data = data or image_dataset(name)
    net_path, _ = _paths(name)
    expect = {"version": VERSION, "data_sha256": cache.fingerprint(data.images, data.labels)}
    state = cache.load_if_valid(net_path, expect)
    if state is not None:
        config = FeatureNetConfig(**json.loads(cache.read_metadata(net_path)["config"]))
        net = FeatureNet(config)
        net.load_state_dict(state)
        return net.eval()
    net, accuracy = train_feature_net(data)
    meta = {**expect, "config": json.dumps(asdict(net.config)), "seed": str(SEED), "val_accuracy": f"{accuracy:.4f}"}
    cache.save_atomic(net_path, net.state_dict(), meta)
    return net


@torch.no_grad()
def extract(net: FeatureNet, images: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Features [N, feature_dim] (float64) of images [N, C, H, W] in [-1, 1]."""
    images = images.to(torch.float32)
    return torch.cat([net.features(images[i:i + batch]) for i in range(0, len(images), batch)]).double()


@dataclass(frozen=True)
class Reference:
    """A dataset's feature network with the features, mean and covariance of all its images."""

    name: str
    net: FeatureNet
    image_shape: tuple[int, int, int]
    features: torch.Tensor
    mean: torch.Tensor
    cov: torch.Tensor


def reference(name: str) -> Reference:
    """The cached feature network and reference statistics for a dataset, rebuilt if missing or stale."""
    data = image_dataset(name)
    net = feature_net(name, data)
    _, ref_path = _paths(name)
    expect = {"version": VERSION, "featnet_sha256": cache.fingerprint(*net.state_dict().values()),
              "data_sha256": cache.fingerprint(data.images, data.labels)}
    stored = cache.load_if_valid(ref_path, expect)
    if stored is None:
        feats = extract(net, data.images)
        stored = {"features": feats, "mean": feats.mean(0), "cov": torch.cov(feats.T)}
        cache.save_atomic(ref_path, stored, expect)
    return Reference(name, net, data.image_shape, stored["features"], stored["mean"], stored["cov"])
