"""Busy photo -> product on white, without diffusion: the baselines the diffusion *clean* job has to beat (issue 14).

On N seeded product triples (unmix.data.products, held-out products and backgrounds by default) this measures,
per image against the white-background truth, PSNR / SSIM and the IoU of the binary mask, and reports medians:

  grabcut       OpenCV GrabCut (Rother et al. 2004) with no user input: the rectangle is the whole frame less a
                1-px border, 5 iterations; its foreground (sure + probable) is kept, the rest turned white
  grabcut-box   the same given the true product box (what a user drawing a rectangle gives it)
  true-mask     the photo composited on white through the true binary mask (alpha > 0.5): the ceiling of any
                method that selects pixels rather than repaint them (edge pixels keep their background blend)

    python benchmarks/product_photos.py --n 200 --size 64 --levels plain clutter
    python benchmarks/product_photos.py --n 200 --size 64 --split train --json runs/product_baselines.json

and, for a first image-conditioned diffusion *clean* model on a CPU budget (a plain loop over the library's
ImageCondObjective and U-Net on a fixed pool of training triples; the real recipe belongs to `unmix train`):

    python benchmarks/product_photos.py train --size 32 --level clutter --minutes 8 --out runs/product_tiny
    python benchmarks/product_photos.py clean runs/product_tiny --n 100 --level clutter   # vs the baselines

and for the product model of `unmix train --data product` (alpha given the photo, composited on white):

    python benchmarks/product_photos.py clean runs/product32 --n 100 --level clutter

Needs opencv-python-headless (works offline). Time per image is this process's wall clock at 1 thread; the
training clock is this process's CPU time.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from unmix.data.products import LEVELS, ProductTriples
from unmix.fsutil import atomic_path, save_safetensors
from unmix.grabcut import grabcut_mask, with_grabcut
from unmix.guidance import ClassifierFreeGuidance
from unmix.losses import Recipe
from unmix.metrics.product import composite_on_white, mask_iou, psnr, ssim
from unmix.nets import build_net, net_config
from unmix.nets.unet import UNet, UNetConfig
from unmix.objectives import ImageCondObjective
from unmix.product import WHITE_TOLERANCE
from unmix.samplers import sample


def measure(level: str, n: int, size: int, split: str, seed: int) -> dict[str, dict[str, float]]:
    """Median PSNR / SSIM / mask IoU and mean ms per image of each baseline on n triples."""
    t = ProductTriples(size, level, split, seed=seed).triples(range(n))
    methods = {
        "grabcut": lambda i: grabcut_mask(t.busy[i]),
        "grabcut-box": lambda i: grabcut_mask(t.busy[i], tuple(int(v) for v in t.box[i])),
        "true-mask": lambda i: (t.mask[i] > 0.5).float(),
    }
    out = {}
    for name, fn in methods.items():
        start = time.perf_counter()
        masks = torch.stack([fn(i) for i in range(n)])
        ms = (time.perf_counter() - start) / n * 1000
        pred = composite_on_white(t.busy, masks)
        out[name] = {"psnr": float(psnr(pred, t.white).median()), "ssim": float(ssim(pred, t.white).median()),
                     "iou": float(mask_iou(masks, t.mask).median()), "ms_per_image": ms}
    return out


def train(out: Path, size: int, level: str, minutes: float, pool: int, batch: int, channels: int, seed: int) -> None:
    """Train an image-conditioned U-Net (busy -> white) for `minutes` of CPU time on `pool` training triples;
    saves the EMA weights and config under `out`."""
    torch.manual_seed(seed)
    t = ProductTriples(size, level, "train", seed=seed + 1000).triples(range(pool))
    net = UNet(UNetConfig(cond_channels=3, channels=channels, channel_mult=(1, 2, 2), num_res_blocks=1,
                          attn_levels=(2,)))
    ema = build_net(net_config(net))
    ema.load_state_dict(net.state_dict())
    obj = ImageCondObjective(Recipe.from_name("edm"), cond_dropout=0.1)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    start, step, losses = time.process_time(), 0, []
    while time.process_time() - start < minutes * 60:
        idx = torch.randint(0, pool, (batch,), generator=g)
        loss = obj.loss(net, t.white[idx], t.busy[idx], obj.draw(batch, g, (3, size, size))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        step += 1
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), net.parameters()):
                pe.lerp_(p, 1 - min(0.999, (1 + step) / (10 + step)))
        losses.append(float(loss.detach()))
        if step % 50 == 0:  # saved every 50 steps, so a run stopped from outside still leaves its latest weights
            print(f"step {step}  loss {sum(losses[-50:]) / 50:.4f}  cpu {time.process_time() - start:.0f}s", flush=True)
            _save(out, ema, obj, step, size=size, level=level, pool=pool, batch=batch)
    _save(out, ema, obj, step, size=size, level=level, pool=pool, batch=batch)
    print(f"saved {out} after {step} steps ({batch} per step), final loss {sum(losses[-50:]) / min(50, len(losses)):.4f}")


def _save(out: Path, net, obj, step: int, **info) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(out / "model.safetensors", net.state_dict())
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps({"net": net_config(net), "recipe": obj.recipe.to_dict(), "steps": step, **info},
                                  indent=1))


def clean_measure(folder: Path, n: int, level: str, split: str, seed: int, nfe: int,
                  guidance: float | None = None) -> dict[str, dict[str, float]]:
    """The trained model's *clean* on n triples next to the baselines, same triples and measures."""
    from safetensors.torch import load as load_tensors

    if not (folder / "config.json").exists() or "size" not in json.loads((folder / "config.json").read_text()):
        return alpha_measure(folder, n, level, split, seed, nfe, guidance)
    cfg = json.loads((folder / "config.json").read_text())
    net = build_net(cfg["net"])
    net.load_state_dict(load_tensors((folder / "model.safetensors").read_bytes()))
    denoiser = Recipe.from_dict(cfg["recipe"]).denoiser(net.eval())
    size = cfg["size"]
    out = measure(level, n, size, split, seed)
    t = ProductTriples(size, level, split, seed=seed).triples(range(n))
    start = time.perf_counter()
    with torch.no_grad():
        pred = sample(denoiser, (n, 3, size, size), "heun", nfe, seed=0, cond=t.busy).clamp(-1, 1)
    ms = (time.perf_counter() - start) / n * 1000
    mask = (pred < 1 - WHITE_TOLERANCE).any(1, keepdim=True).float()
    out[f"diffusion-{nfe}nfe"] = {"psnr": float(psnr(pred, t.white).median()), "ssim": float(ssim(pred, t.white).median()),
                                  "iou": float(mask_iou(mask, t.mask).median()), "ms_per_image": ms}
    return out


def alpha_measure(folder: Path, n: int, level: str, split: str, seed: int, nfe: int,
                  guidance: float | None = None) -> dict[str, dict[str, float]]:
    """A product model of `unmix train --data product` (x0 = [alpha, photo] given the photo): its sampled alpha
    composites the photo on white (unmix.product), next to the baselines on the same triples."""
    import unmix
    from unmix.product import _alpha_of, check_product_model, on_white

    model = unmix.load(folder)
    check_product_model(model)
    size = model.shape[-1]
    out = measure(level, n, size, split, seed)
    t = ProductTriples(size, level, split, seed=seed).triples(range(n))
    start = time.perf_counter()
    with torch.no_grad():
        d = model.denoiser if guidance is None else ClassifierFreeGuidance(model.denoiser, scale=guidance)
        a = _alpha_of(sample(d, (n, 4, size, size), "heun", nfe, seed=0, cond=with_grabcut(t.busy)))
    ms = (time.perf_counter() - start) / n * 1000
    pred = on_white(t.busy, a)
    name = f"unmix-alpha-{nfe}nfe" + (f"-w{guidance:g}" if guidance is not None else "")
    out[name] = {"psnr": float(psnr(pred, t.white).median()), "ssim": float(ssim(pred, t.white).median()),
                 "iou": float(mask_iou((a > 0.5).float(), t.mask).median()), "ms_per_image": ms}
    return out


def _table(level: str, rows: dict[str, dict[str, float]]) -> None:
    for name, r in rows.items():
        print(f"{level:8s} {name:16s} {r['psnr']:8.2f} {r['ssim']:6.3f} {r['iou']:6.3f} {r['ms_per_image']:7.1f}")


def main() -> None:
    torch.set_num_threads(1)
    import sys

    if len(sys.argv) > 1 and sys.argv[1] in ("train", "clean"):
        ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        ap.add_argument("command")
        ap.add_argument("folder", type=Path, nargs="?")
        ap.add_argument("--out", type=Path)
        ap.add_argument("--size", type=int, default=32)
        ap.add_argument("--level", default="clutter", choices=LEVELS)
        ap.add_argument("--minutes", type=float, default=8.0)
        ap.add_argument("--pool", type=int, default=4000)
        ap.add_argument("--batch", type=int, default=16)
        ap.add_argument("--channels", type=int, default=32)
        ap.add_argument("--n", type=int, default=100)
        ap.add_argument("--split", default="test", choices=("train", "test"))
        ap.add_argument("--nfe", type=int, default=17)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--guidance", type=float, default=None, help="product models: guidance scale on the photo")
        a = ap.parse_args()
        if a.command == "train":
            train(a.out, a.size, a.level, a.minutes, a.pool, a.batch, a.channels, a.seed)
        else:
            rows = clean_measure(a.folder, a.n, a.level, a.split, a.seed, a.nfe, a.guidance)
            print(f"{a.n} triples, split {a.split}, level {a.level}, seed {a.seed}: medians")
            _table(a.level, rows)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--levels", nargs="+", default=["plain", "clutter"], choices=LEVELS)
    ap.add_argument("--split", default="test", choices=("train", "test"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    a = ap.parse_args()
    results = {}
    print(f"{a.n} triples, {a.size} px, split {a.split}, seed {a.seed}: medians")
    print(f"{'level':8s} {'method':16s} {'PSNR dB':>8s} {'SSIM':>6s} {'IoU':>6s} {'ms/img':>7s}")
    for level in a.levels:
        results[level] = measure(level, a.n, a.size, a.split, a.seed)
        _table(level, results[level])
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"n": a.n, "size": a.size, "split": a.split, "seed": a.seed, "results": results},
                                     indent=1))


if __name__ == "__main__":
    main()
