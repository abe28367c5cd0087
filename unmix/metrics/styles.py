"""The feature space of the five-style emoji data ("emoji:styles=S:split=P"), and its figures: FD to the training
pictures and to the held-out ones, KID, precision and recall, beside what held-out real pictures score.

The network (unmix.metrics.features.FeatureNet) is trained on the TRAIN split of the chosen styles only (held-out
pictures are held out of everything), deterministically (one thread, fixed seed), as a classifier of the joint
label (style, Unicode group) on 80% of those pictures; the other 20% give its validation accuracy. It is cached in
the metrics cache under the train split's name, keyed by a fingerprint of its pictures and labels and VERSION.
Pictures are measured at 32 px: 64 px pictures are averaged (2x2 area) down to 32 px first, as the 32 px data is
made from the 64 px.

Figures of samples against "emoji:styles=S:split=train" (evaluate_styles):
- "fd": FD to a fixed random subset (seed 0) of the training pictures as large as the held-out split, and
  "fd_heldout": FD to every held-out picture. FD's bias depends on the reference's size; with equal sizes the two
  compare: new pictures score about the same on both, a copier scores far closer to its training set.
- "kid" (unbiased, cubic kernel), "precision" and "recall" (k = 3, Kynkäänniemi et al. 2019) against all the
  training pictures.
- "heldout_real": the same figures for the held-out real pictures themselves (FD to the same training subset), the
  reference of what new real pictures score.
Data of another split ("heldout", "all") has no held-out pictures of its own: every figure is against all of its
pictures, with no "fd_heldout" and no reference.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass

import torch

from unmix.data import load_dataset
from unmix.data.emoji_styles import SPLITS, parse_spec, parse_styles, spec_name
from unmix.errors import UnmixError
from unmix.metrics import cache
from unmix.metrics.distances import frechet_distance_from_stats, kid, mean_cov, precision_recall
from unmix.metrics.features import FeatureNet, FeatureNetConfig, ImageSet, extract, train_feature_net
from unmix.store.files import load_safetensors, read_metadata, save_safetensors

VERSION = "1"  # of the five-style feature networks: bump when their labels, architecture or training change
SEED = 0
SIZE = 32  # the network's input side; 64 px pictures are averaged down to it
SIDES = (32, 64)
LABELS = "groups"  # the joint label (style, info[LABELS]) the network classifies
EPOCHS, WIDTH, MAX_WIDTH = 30, 16, 64
K_NEIGHBOURS = 3
SPEC = "emoji:styles=S:split=P"  # how the error messages spell the five-style data


def styles_spec(name: str) -> str | None:
    """The canonical name of a five-style emoji dataset ("emoji:styles=all:split=train"), or None for any other
    data; plain "emoji" (and "emoji:styles=noto" without a split, which loads the same pictures) is not five-style."""
    if not isinstance(name, str) or not name.startswith("emoji:"):
        return None
    named = parse_spec(name)
    chosen, split = parse_styles(named.get("styles")), named.get("split")
    if split is None and chosen == ("noto",):
        return None
    if split is not None and split not in SPLITS:
        raise UnmixError(f"split must be one of {', '.join(SPLITS)} in the dataset name {name!r}")
    return spec_name(chosen, split or "train")


def _parts(spec: str) -> tuple[tuple[str, ...], str]:
    named = parse_spec(spec)
    return parse_styles(named.get("styles")), named["split"]


def _pictures(spec: str) -> tuple[torch.Tensor, object]:
    ds = load_dataset(spec, SIZE)
    return ds.batch(torch.arange(len(ds)))[0], ds


def joint_labels(info: dict, key: str = LABELS) -> tuple[torch.Tensor, list[str]]:
    """Labels [N] of the pairs (style, info[key][i]) and their names "style/value", in sorted order."""
    pairs = [f"{s}/{v}" for s, v in zip(info["styles"], info[key])]
    names = sorted(set(pairs))
    index = {p: i for i, p in enumerate(names)}
    return torch.as_tensor([index[p] for p in pairs], dtype=torch.long), names


def _slug(spec: str) -> str:
    return spec.replace(":", "-").replace("=", "-").replace(",", "+")


def style_net(spec: str) -> tuple[FeatureNet, dict[str, str]]:
    """The cached feature network of a five-style dataset (trained on its styles' train split) and its metadata
    (val_accuracy, classes, labels, ...); trained and cached if missing or stale."""
    spec = styles_spec(spec) or spec
    chosen, _ = _parts(spec)
    train = spec_name(chosen, "train")
    images, ds = _pictures(train)
    labels, names = joint_labels(ds.info)
    path = cache.metrics_dir() / f"{_slug(train)}-featnet-v{VERSION}.safetensors"
    expect = {"version": VERSION, "data": train, "data_sha256": cache.fingerprint(ds.data, labels)}
    state = load_safetensors(path, expect)
    if state is not None:
        meta = read_metadata(path)
        net = FeatureNet(FeatureNetConfig(**json.loads(meta["config"])))
        net.load_state_dict(state)
        return net.eval(), meta
    print(f"training the feature network of {train} ({len(images)} pictures, {len(names)} (style, "
          f"{LABELS[:-1]}) classes, {EPOCHS} epochs); once, then cached in {path.parent}", file=sys.stderr)
    net, accuracy = train_feature_net(ImageSet(train, images, labels, len(names)), EPOCHS, seed=SEED, width=WIDTH,
                                      max_width=MAX_WIDTH)
    meta = {**expect, "config": json.dumps(asdict(net.config)), "seed": str(SEED), "epochs": str(EPOCHS),
            "labels": f"(style, {LABELS[:-1]})", "classes": str(len(names)), "val_accuracy": f"{accuracy:.4f}"}
    save_safetensors(path, net.state_dict(), meta, make_parents=True)
    return net, meta


@dataclass(frozen=True)
class StyleReference:
    """A five-style dataset's feature network with the features of its pictures, of the held-out split's (None
    unless the data is a train split) and the fixed subset of training pictures that FD is measured against."""

    spec: str
    net: FeatureNet
    features: torch.Tensor  # [N, d] of the data's pictures
    heldout: torch.Tensor | None  # [M, d] of the held-out split's pictures
    subset: torch.Tensor  # indices into features: M of them (all of them without a held-out split)
    meta: dict

    @property
    def fd_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_cov(self.features[self.subset])


def style_reference(spec: str) -> StyleReference:
    """The feature network and reference features of a five-style dataset, from the cache when up to date."""
    canonical = styles_spec(spec)
    if canonical is None:
        raise UnmixError(f"{spec!r} is not five-style emoji data; write {SPEC}")
    chosen, split = _parts(canonical)
    net, meta = style_net(canonical)
    images, ds = _pictures(canonical)
    held = _pictures(spec_name(chosen, "heldout")) if split == "train" else None
    path = cache.metrics_dir() / f"{_slug(canonical)}-reference-v{VERSION}.safetensors"
    keyed = [ds.data] if held is None else [ds.data, held[1].data]
    expect = {"version": VERSION, "data": canonical, "featnet_sha256": cache.fingerprint(*net.state_dict().values()),
              "data_sha256": cache.fingerprint(*keyed)}
    stored = load_safetensors(path, expect)
    if stored is None:
        stored = {"features": extract(net, images)}
        if held is not None:
            stored["heldout"] = extract(net, held[0])
        save_safetensors(path, stored, expect, make_parents=True)
    heldout = stored.get("heldout")
    n = len(stored["features"])
    subset = torch.arange(n) if heldout is None else \
        torch.randperm(n, generator=torch.Generator().manual_seed(SEED))[:len(heldout)].sort().values
    return StyleReference(canonical, net, stored["features"], heldout, subset, meta)


def figures(ref: StyleReference, feats: torch.Tensor) -> dict[str, float]:
    """FD (to the training subset, and to the held-out pictures when there are some), KID, precision and recall of
    features [N, d] against a reference."""
    out = {"fd": frechet_distance_from_stats(*mean_cov(feats), *ref.fd_stats)}
    if ref.heldout is not None:
        out["fd_heldout"] = frechet_distance_from_stats(*mean_cov(feats), *mean_cov(ref.heldout))
    precision, recall = precision_recall(ref.features, feats, K_NEIGHBOURS)
    return {**out, "kid": kid(ref.features, feats), "precision": precision, "recall": recall}


def evaluate_styles(samples: torch.Tensor, spec: str) -> dict:
    """The figures of samples [N, 3, 32|64, 32|64] in [-1, 1] against a five-style dataset (module docstring):
    {"fd", "fd_heldout", "kid", "precision", "recall", "n", "heldout_real": {"fd", "kid", "precision", "recall",
    "n", "training_pictures"}}; without a held-out split, no "fd_heldout" and no "heldout_real"."""
    ref = style_reference(spec)
    result = {**figures(ref, extract(ref.net, samples)), "n": len(samples)}
    if ref.heldout is not None:
        real = figures(ref, ref.heldout)
        real.pop("fd_heldout")
        result["heldout_real"] = {**real, "n": len(ref.heldout), "training_pictures": len(ref.features)}
    return result


def reference_lines(result: dict) -> list[str]:
    """The line eval prints for the held-out real pictures (none when the data has no held-out split)."""
    real = result.get("heldout_real")
    if real is None:
        return []
    return [f"reference (held-out real): fd {real['fd']:.4g} (to {real['n']} training pictures), kid "
            f"{real['kid']:.4g}, precision {real['precision']:.3f}, recall {real['recall']:.3f}: what {real['n']} new "
            f"real pictures score against the {real['training_pictures']} training pictures"]
