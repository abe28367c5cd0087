"""The feature spaces for image metrics: a small CNN per dataset, trained on that dataset itself.

Inception features know nothing about 8x8 digits, and nothing may be downloaded, so every image dataset gets
its own small CNN, and its penultimate layer is the feature space:

- bundled datasets (digits, emoji): a classifier of their labels (digit, Unicode group);
- an image folder: a contrastive network (SimCLR, Chen et al. 2020: NT-Xent over two random views of each image
  in a batch), plus a classifier head when the folder has two or more class subfolders. Views differ by
  whole-pixel shifts, flips, contrast, brightness and saturation, which forces shape features (else matching
  colours would solve the task); never by blur or noise, so the network is not taught to ignore the defects
  FD, KID and precision/recall must see. Images larger than FOLDER_MAX_SIZE are averaged down to it first.

Training uses a fixed seed on one thread (bit-identical rebuilds on the same machine). The network is saved with
safetensors in the user cache folder, and the reference features (every image of the dataset) beside it. Both
are keyed by a fingerprint of the data and a version number, so a changed dataset or network means a rebuild.
"""
from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unmix.data import load_dataset
from unmix.errors import UnmixError
from unmix.metrics import cache
from unmix.store.files import load_safetensors, read_metadata, save_safetensors

VERSION = "1"  # of the bundled datasets' classifiers
FOLDER_VERSION = "1"  # of the folder networks: bump when their objective, views or architecture change
SEED = 0
FEATURE_DIM = 64
BUNDLED = ("digits", "emoji")  # labelled image sets that come with unmix (emoji: labelled by Unicode group)
FEATURE_DATASETS = (*BUNDLED, "folder:PATH")
FOLDER_MAX_SIZE = 32  # folder networks see at most 32x32 pixels: the CPU cost of training grows with the area
FOLDER_STEPS = (300, 2000)  # a folder network trains for 30 epochs, stretched or cut to this many steps
TEMPERATURE = 0.5  # NT-Xent softmax temperature (SimCLR's choice for CIFAR-10)


@dataclass(frozen=True)
class FeatureNetConfig:
    in_channels: int
    size: int  # the network's input side; other sizes are averaged to it (area) first
    num_classes: int  # outputs of the head: classes, or a contrastive projection followed by any classes
    width: int = 32
    max_width: int = 128
    feature_dim: int = FEATURE_DIM


class FeatureNet(nn.Module):
    """Strided convs down to 2x2, then a linear layer to `feature_dim` features and a linear head."""

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
        if x.shape[-1] != self.config.size:
            x = F.interpolate(x, size=self.config.size, mode="area")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass(frozen=True)
class ImageSet:
    """The images a feature space is trained on and measured against; `labels` is None when there are no classes."""

    name: str
    images: torch.Tensor  # [N, C, H, W] float32 in [-1, 1]
    labels: torch.Tensor | None  # [N] long
    num_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def fingerprint(self) -> str:
        return cache.fingerprint(self.images, *([] if self.labels is None else [self.labels]))


def is_folder(name: str) -> bool:
    return name.startswith("folder:")


def image_dataset(name: str, size: int | None = None) -> ImageSet:
    """The images of a bundled dataset, or of `folder:PATH` at `size` x `size` (default 32).

    A folder's class subfolders are its labels when there are at least two of them."""
    if name not in BUNDLED and not is_folder(name):
        raise UnmixError(f"no feature network for dataset {name!r}; valid: {', '.join(FEATURE_DATASETS)}")
    ds = load_dataset(name, size if is_folder(name) else None)
    images, labels = ds.batch(torch.arange(len(ds)))
    if ds.num_classes < 2:
        return ImageSet(name, images, None, 0)
    return ImageSet(name, images, labels, ds.num_classes)


@contextlib.contextmanager
def deterministic(seed: int):
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


def _fit(net: nn.Module, train_idx: torch.Tensor, epochs: int, batch: int, seed: int, loss_fn) -> None:
    """AdamW with a one-cycle learning rate over `epochs` shuffled passes; loss_fn(batch indices, generator)."""
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(train_idx) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    net.train()
    for _ in range(epochs):
        order = train_idx[torch.randperm(len(train_idx), generator=g)]
        for i in range(0, len(order), batch):
            loss = loss_fn(order[i:i + batch], g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()


def train_feature_net(data: ImageSet, epochs: int = 30, batch: int = 64, seed: int = SEED, width: int = 32,
                      max_width: int = 128) -> tuple[FeatureNet, float]:
    """Train a classifier of the labels on 80% of the data; return it (eval mode) and its validation accuracy."""
    c, h, w = data.image_shape
    if h != w:
        raise UnmixError(f"feature networks need square images, got {h}x{w}")
    train_idx, val_idx = _split(len(data.labels), seed)
    with deterministic(seed):
        net = FeatureNet(FeatureNetConfig(c, h, data.num_classes, width, max_width))

        def loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            return F.cross_entropy(net(data.images[idx]), data.labels[idx])

        _fit(net, train_idx, epochs, batch, seed, loss)
        with torch.no_grad():
            accuracy = float((net(data.images[val_idx]).argmax(1) == data.labels[val_idx]).float().mean())
    return net, accuracy


# -- folders: contrastive views -------------------------------------------------------------------------------
def random_view(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random view of each image [N, C, H, W] in [-1, 1]: shifted by whole pixels (up to 1/8 of the side, edges
    repeated), mirrored half the time, and for colour images saturation x0.5..1.5 or (one in five) greyscale.
    Pixels are moved and their colour turned towards or away from grey; brightness is kept, and nothing is
    mixed with its neighbours."""
    n, c, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), generator=generator)
    rows = (dy + torch.arange(h))[:, None, :, None]
    cols = (dx + torch.arange(w))[:, None, None, :]
    view = padded[torch.arange(n)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    flip, saturation, grey = torch.rand(3, n, 1, 1, 1, generator=generator)
    view = torch.where(flip < 0.5, view.flip(-1), view)
    if c == 3:
        luma = view.mean(1, keepdim=True)
        view = (luma + (view - luma) * torch.where(grey < 0.2, 0.0, 0.5 + saturation)).clamp(-1, 1)
    return view


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """SimCLR's loss: each view must pick its partner out of the other 2n - 1 views by cosine similarity."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T / temperature).fill_diagonal_(-math.inf)
    n = len(z1)
    return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))


def folder_epochs(n_train: int, batch: int) -> int:
    """30 passes, stretched or cut so that a folder network trains for FOLDER_STEPS[0] to FOLDER_STEPS[1] steps."""
    per_epoch = math.ceil(n_train / batch)
    lo, hi = FOLDER_STEPS
    return max(1, min(max(30, math.ceil(lo / per_epoch)), hi // per_epoch))


def train_folder_net(data: ImageSet, epochs: int, batch: int = 64, seed: int = SEED) -> tuple[FeatureNet, dict]:
    """Train a folder's contrastive network (with a class head when labelled) on 80% of its images.

    Returns the network (eval mode) and its validation scores: "val_retrieval", the share of (up to 1000)
    held-out images whose second view is the nearest to their first view among all second views, and with
    labels "val_accuracy" of the class head."""
    c, h, _ = data.image_shape
    proj, size = FEATURE_DIM, min(h, FOLDER_MAX_SIZE)
    images = F.interpolate(data.images, size=size, mode="area") if h > size else data.images  # as features() does
    train_idx, val_idx = _split(len(images), seed)
    val_idx = val_idx[:1000]
    with deterministic(seed):
        net = FeatureNet(FeatureNetConfig(c, size, proj + data.num_classes, 16, 64))

        def loss(idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
            x = images[idx]
            a, b = net(random_view(x, g)), net(random_view(x, g))
            total = nt_xent(a[:, :proj], b[:, :proj])
            if data.labels is not None:
                y = data.labels[idx]
                total = total + (F.cross_entropy(a[:, proj:], y) + F.cross_entropy(b[:, proj:], y)) / 2
            return total

        _fit(net, train_idx, epochs, batch, seed, loss)
        g = torch.Generator().manual_seed(seed + 1)
        held = images[val_idx]
        with torch.no_grad():
            fa, fb = net.features(random_view(held, g)), net.features(random_view(held, g))
            nearest = (F.normalize(fa, dim=1) @ F.normalize(fb, dim=1).T).argmax(1)
            scores = {"val_retrieval": float((nearest == torch.arange(len(held))).float().mean())}
            if data.labels is not None:
                predicted = net.head(fa)[:, proj:].argmax(1)
                scores["val_accuracy"] = float((predicted == data.labels[val_idx]).float().mean())
    return net, scores


# -- cached networks and reference statistics -----------------------------------------------------------------
def _paths(data: ImageSet) -> tuple[Path, Path, str]:
    """The network's and the reference's cache files, and the version they are built with."""
    folder = cache.metrics_dir()
    if is_folder(data.name):  # named by content: a moved folder keeps its cache, two folders never collide
        stem, version = f"folder-{data.fingerprint()[:16]}-{data.image_shape[-1]}px", FOLDER_VERSION
    else:
        stem, version = data.name, VERSION
    return (folder / f"{stem}-featnet-v{version}.safetensors", folder / f"{stem}-reference-v{version}.safetensors",
            version)


def _build(data: ImageSet, net_path: Path) -> tuple[FeatureNet, dict[str, str]]:
    """Train the network a dataset's feature space comes from; its metadata besides the cache key."""
    if not is_folder(data.name):
        net, accuracy = train_feature_net(data)
        return net, {"val_accuracy": f"{accuracy:.4f}"}
    epochs = folder_epochs(int(0.8 * len(data.images)), 64)
    objective = "contrastive" + ("" if data.labels is None else f" + {data.num_classes} classes")
    print(f"training the feature network for {data.name} ({len(data.images)} images, {objective}, {epochs} epochs); "
          f"once, then cached in {net_path.parent}", file=sys.stderr)
    net, scores = train_folder_net(data, epochs)
    return net, {"objective": objective, "epochs": str(epochs), **{k: f"{v:.4f}" for k, v in scores.items()}}


def feature_net(data: ImageSet) -> FeatureNet:
    """The cached feature network for a dataset, trained (deterministically) and cached if missing or stale."""
    net_path, _, version = _paths(data)
    expect = {"version": version, "data_sha256": data.fingerprint()}
    state = load_safetensors(net_path, expect)
    if state is not None:
        net = FeatureNet(FeatureNetConfig(**json.loads(read_metadata(net_path)["config"])))
        net.load_state_dict(state)
        return net.eval()
    net, scores = _build(data, net_path)
    meta = {**expect, "config": json.dumps(asdict(net.config)), "seed": str(SEED), **scores}
    save_safetensors(net_path, net.state_dict(), meta, make_parents=True)
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


def reference(name: str, size: int | None = None) -> Reference:
    """The cached feature network and reference statistics for a dataset (a folder's images at `size`),
    rebuilt if missing or stale."""
    data = image_dataset(name, size)
    need = FEATURE_DIM + 1
    if len(data.images) < need:
        raise UnmixError(f"{name} holds {len(data.images)} images; its feature statistics need at least {need} "
                         f"(more than the {FEATURE_DIM} feature dimensions)")
    net = feature_net(data)
    _, ref_path, version = _paths(data)
    expect = {"version": version, "featnet_sha256": cache.fingerprint(*net.state_dict().values()),
              "data_sha256": data.fingerprint()}
    stored = load_safetensors(ref_path, expect)
    if stored is None:
        feats = extract(net, data.images)
        stored = {"features": feats, "mean": feats.mean(0), "cov": torch.cov(feats.T)}
        save_safetensors(ref_path, stored, expect, make_parents=True)
    return Reference(name, net, data.image_shape, stored["features"], stored["mean"], stored["cov"])
