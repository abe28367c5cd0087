"""The copy check: which samples are copies of a training picture (Gu et al. 2023), and how close each one comes.

    check = check_copies(samples, training_pictures)      # [N, C, H, W] in [-1, 1]; held-out pictures optional
    check.figures()     # {"share": copies / samples, "nearest_psnr": median dB, ..., the reference's figures}
    check.sheet()       # the worst cases: each sample beside its nearest training picture

Distances are unmix.metrics.nearest's: RMS in pixels at the best whole-pixel shift (of up to 1 px at 32 px), exact.

Criterion (Gu et al. 2023, "On memorization in diffusion models"): a copy iff d1 < d2 / 3, d1 and d2 the
distances to the nearest and second-nearest distinct training pictures (8-bit duplicates are merged, so two equal
training pictures do not hide each other's copies); a sample within 8-bit rounding of a training picture is a
copy whatever d2 is. PSNR = 10 log10(2^2 / MSE) for pictures in [-1, 1], the MSE floored at 8-bit rounding noise
((2/255)^2 / 12): an exact copy reads 58.9 dB, not infinity.

Reference, what "new" looks like: the same figures for real pictures the index does not hold: held-out pictures
when the data has them, else up to REFERENCE_N training pictures, each against all the others (leave-one-out).
For independently drawn data the two agree in distribution: a picture left out of a set is new to the rest.
The index (merged duplicates, the bound's subspace, the leave-one-out figures) is cached by the pictures' sha256.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from unmix.data.images import auto_scale, make_grid
from unmix.errors import UnmixError
from unmix.metrics import cache
from unmix.metrics.nearest import Nearest, centre, principal_basis, search
from unmix.store.files import load_safetensors, save_safetensors

VERSION = "1"  # of the cached index: bump when the distance, the merging or the reference rule change
RATIO = 1 / 3  # Gu et al.'s threshold on d1 / d2
FLOOR_MSE = (2 / 255) ** 2 / 12  # 8-bit rounding noise of pictures in [-1, 1]
REFERENCE_N = 1000  # training pictures measured leave-one-out when no held-out pictures are given


def as_pictures(x, what: str = "pictures") -> torch.Tensor:
    """Float32 [N, C, H, W] in [-1, 1] (uint8 0..255 is scaled); anything else is one clear error."""
    x = torch.as_tensor(x).detach().cpu()
    x = x.float() / 127.5 - 1 if x.dtype == torch.uint8 else x.float()
    if x.ndim != 4 or min(x.shape) < 1:
        raise UnmixError(f"{what} must be images [N, C, H, W], got shape {list(x.shape)}")
    if not torch.isfinite(x).all():
        raise UnmixError(f"{what} contain NaN or infinite values")
    if x.min() >= 0 and x.max() > 1.5:
        raise UnmixError(f"{what} span [{x.min():.3g}, {x.max():.3g}]; they look like pixel values, scale them to "
                         "[-1, 1]")
    return x.clamp(-1, 1)


def is_copy(near: Nearest) -> torch.Tensor:
    return (near.ratio < RATIO) | (near.mse1 <= FLOOR_MSE)


def psnr(near: Nearest) -> torch.Tensor:
    """dB to the nearest picture, for pictures in [-1, 1]."""
    return 10 * torch.log10(4 / near.mse1.double().clamp(min=FLOOR_MSE))


def figures(near: Nearest) -> dict:
    """Share of copies, median PSNR to the nearest picture, count."""
    return {"share": float(is_copy(near).double().mean()), "nearest_psnr": float(psnr(near).quantile(0.5)),
            "n": len(near.mse1)}


@dataclass(frozen=True)
class CopyIndex:
    """The distinct training pictures, searchable; `reference`: the leave-one-out search of up to REFERENCE_N."""

    pictures: torch.Tensor  # [N, C, H, W] float32
    items: torch.Tensor  # [N] the first dataset item showing each picture
    basis: torch.Tensor | None  # the lower bound's subspace (unmix.metrics.nearest.principal_basis)
    reference: Nearest

    def search(self, x, what: str = "samples") -> Nearest:
        """Nearest and second-nearest training picture of each query."""
        x = as_pictures(x, what)
        if x.shape[1:] != self.pictures.shape[1:]:
            raise UnmixError(f"{what} of shape {list(x.shape[1:])} do not match the training pictures' "
                             f"{list(self.pictures.shape[1:])}")
        return search(self.pictures, x, self.basis)


def build_index(pictures) -> CopyIndex:
    """Merge 8-bit duplicates, find the bound's subspace, and measure up to REFERENCE_N of the pictures (a fixed
    draw) each against all the others."""
    x = as_pictures(pictures, "training pictures")
    levels = ((x + 1) * 127.5).round().to(torch.uint8).flatten(1)
    _, owner = torch.unique(levels, dim=0, return_inverse=True)
    items = torch.full((int(owner.max()) + 1,), len(x)).scatter_reduce(0, owner, torch.arange(len(x)), "amin")
    if len(items) < 3:
        raise UnmixError(f"the copy check needs at least 3 distinct training pictures, got {len(items)}")
    distinct = x[items]
    basis = principal_basis(centre(distinct))
    chosen = torch.randperm(len(items), generator=torch.Generator().manual_seed(0))[:REFERENCE_N].sort().values
    return CopyIndex(distinct, items, basis, search(distinct, distinct[chosen], basis, exclude=chosen))


def copy_index(pictures) -> CopyIndex:
    """build_index, cached in the metrics cache under the pictures' sha256."""
    x = as_pictures(pictures, "training pictures")
    key = cache.fingerprint(x)
    path = cache.metrics_dir() / f"copies-{key[:16]}-{x.shape[-1]}px-v{VERSION}.safetensors"
    expect = {"version": VERSION, "data_sha256": key}
    stored = load_safetensors(path, expect)
    if stored is not None:
        ref = Nearest(stored["mse1"], stored["mse2"], stored["nearest"])
        return CopyIndex(x[stored["items"]], stored["items"], stored.get("basis"), ref)
    index = build_index(x)
    ref = index.reference
    tensors = {"items": index.items, "mse1": ref.mse1, "mse2": ref.mse2, "nearest": ref.nearest}
    save_safetensors(path, tensors if index.basis is None else {**tensors, "basis": index.basis}, expect,
                     make_parents=True)
    return index


@dataclass(frozen=True)
class CopyCheck:
    """Samples against a training index, beside real pictures the index does not hold."""

    samples: torch.Tensor
    index: CopyIndex
    near: Nearest
    reference: Nearest
    reference_kind: str  # "held-out" or "leave-one-out"

    def figures(self) -> dict:
        return {**figures(self.near), "training_pictures": len(self.index.pictures), "reference": self.reference_kind,
                **{f"reference_{k}": v for k, v in figures(self.reference).items()}}

    def worst(self, n: int = 32) -> torch.Tensor:
        """The n samples with the lowest d1 / d2, most copy-like first."""
        return self.near.ratio.argsort(stable=True)[:n]

    def cases(self, n: int = 32) -> list[dict]:
        """The worst n as records: sample, nearest training item, d1 / d2, PSNR, copy or not."""
        worst, db, copy = self.worst(n), psnr(self.near), is_copy(self.near)
        return [{"sample": int(i), "nearest_item": int(self.index.items[self.near.nearest[i]]),
                 "ratio": float(self.near.ratio[i]), "psnr": float(db[i]), "copy": bool(copy[i])} for i in worst]

    def sheet(self, n: int = 32, per_row: int = 8, worst: bool = True) -> Image.Image:
        """Each sample, then its nearest training picture to its right: the n worst cases, or (worst=False) the
        first n samples as drawn (a contact sheet that is not picked)."""
        chosen = self.worst(n) if worst else torch.arange(min(n, len(self.samples)))
        pairs = torch.stack([self.samples[chosen], self.index.pictures[self.near.nearest[chosen]]], 1).flatten(0, 1)
        return make_grid(pairs, nrow=2 * min(per_row, len(chosen)), scale=auto_scale(pairs.shape[-2]))


def check_copies(samples, training, heldout=None) -> CopyCheck:
    """The copy check of samples against training pictures; the reference is `heldout` (real pictures the training
    never saw) when given, else leave-one-out over the training pictures."""
    x, index = as_pictures(samples, "samples"), copy_index(training)
    near = index.search(x)
    if heldout is None:
        return CopyCheck(x, index, near, index.reference, "leave-one-out")
    return CopyCheck(x, index, near, index.search(heldout, "held-out pictures"), "held-out")


def copy_lines(result: dict) -> list[str]:
    """The two lines eval and audit print: the samples' copies, and the same for real pictures new to the index."""
    kind = ("held-out real pictures" if result["reference"] == "held-out"
            else "real pictures, each against the other training pictures (leave-one-out)")
    return [f"copies:     {result['share']:.1%} of {result['n']} samples copy one of {result['training_pictures']} "
            f"training pictures (nearest < 1/3 of second nearest); median PSNR to the nearest "
            f"{result['nearest_psnr']:.2f} dB",
            f"reference:  {result['reference_share']:.1%} of {result['reference_n']} {kind}; median PSNR "
            f"{result['reference_nearest_psnr']:.2f} dB"]
