"""*square* and *scene* of a product model against OpenCV's inpainting: the `jobs` command of benchmarks/product.py
(whose docstring defines every measure)."""
from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unmix.data.products import ProductTriples, _scaled_glyph, paste
from unmix.errors import UnmixError
from unmix.metrics.product import psnr

SQUARE_BORDER = 0.25  # unmix.apps.product.square_photo's default
REFERENCE_PHOTOS = 1000


def telea(photo: torch.Tensor, known: torch.Tensor, radius: int = 5) -> torch.Tensor:
    """OpenCV's inpainting (Telea 2004) of a [C, H, W] image in [-1, 1] (C = 1 or 3) where `known` [1, H, W] is
    False."""
    import cv2

    img = ((photo.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    hole = (~known[0]).numpy().astype(np.uint8)
    out = cv2.inpaint(np.ascontiguousarray(img), hole, radius, cv2.INPAINT_TELEA)
    out = torch.from_numpy(out.reshape(*out.shape[:2], -1)).permute(2, 0, 1).float()
    return out / 127.5 - 1


def _cut_items(split: str, seed: int, size: int, n: int):
    """The first n items of level "cut" whose product reaches out of the frame: (triples, indices)."""
    data = ProductTriples(size, "cut", split, seed=seed)
    found, index = [], 0
    while len(found) < n:
        top, left, h, w = (int(v) for v in data.item(index)[4])
        if top < 0 or left < 0 or top + h > size or left + w > size:
            found.append(index)
        index += 1
    return data.triples(found)


def _whole_on_white(product: int, box, size: int, side: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The uncut product on white in the widened frame, and its alpha: the truth of *square*'s filling."""
    top, left, h, w = (int(v) for v in box)
    rgba = _scaled_glyph(product, max(h, w))
    white, alpha = torch.ones(3, side, side), torch.zeros(1, side, side)
    paste(white, alpha, rgba, top + offset, left + offset)
    return white.clamp(0, 1) * 2 - 1, alpha.clamp(0, 1)


def square_rows(model, n: int, split: str, seed: int) -> dict[str, dict[str, float]]:
    from unmix.apps.product import alpha, on_white, outpaint_frame

    size = model.shape[-1]
    t = _cut_items(split, seed, size, n)
    scores: dict[str, list[float]] = {"unmix": [], "telea": [], "white": []}
    seconds = {"unmix": 0.0, "telea": 0.0, "white": 0.0}
    for i in range(n):
        a = alpha(model.denoiser, t.busy[i], size)
        start = time.perf_counter()
        photo, a_unmix, known = outpaint_frame(model.denoiser, t.busy[i], a, size, border=SQUARE_BORDER, seed=i)
        seconds["unmix"] += time.perf_counter() - start
        side = known.shape[-1]
        offset = int(known[0].any(1).nonzero()[0])  # the job's widened frame: the square photo at (offset, offset)
        truth, _ = _whole_on_white(int(t.product[i]), t.box[i], size, side, offset)
        top, left, h, w = (int(v) for v in t.box[i])
        cut = torch.zeros(1, side, side, dtype=torch.bool)  # the product's true box outside the frame
        cut[:, max(top + offset, 0):top + offset + h, max(left + offset, 0):left + offset + w] = True
        cut &= ~known
        canvas, a_known = torch.where(known, photo, 0.0), torch.where(known, a_unmix, 0.0)  # nothing filled
        start = time.perf_counter()
        filled = (telea(canvas, known), (telea(a_known * 2 - 1, known) + 1) / 2)
        seconds["telea"] += time.perf_counter() - start
        for name, (p, al) in {"unmix": (photo, a_unmix), "telea": filled, "white": (canvas, a_known)}.items():
            pred = on_white(p, al.clamp(0, 1))
            scores[name].append(float(psnr(pred[:, cut[0]][None], truth[:, cut[0]][None])[0]))
    return {name: {"psnr_cut_part": float(np.median(v)), "ms_per_image": seconds[name] / n * 1000}
            for name, v in scores.items()}


def _edge_error(result: torch.Tensor, mask: torch.Tensor, white: torch.Tensor) -> float:
    """Mean over images of the 2-px edge band error (see benchmarks/product.py), in 0..255 levels."""
    hard = (mask > 0.5).float()
    band = (F.max_pool2d(hard, 5, 1, 2) - (-F.max_pool2d(-hard, 5, 1, 2))) > 0
    err = (mask * (result - 1) + 1 - white).abs().sum(1, keepdim=True) / 3 * 127.5
    return float(torch.stack([e[b].mean() for e, b in zip(err, band)]).mean())


def scene_rows(model, n: int, split: str, seed: int, backdrop=None) -> dict[str, dict[str, float]]:
    from unmix.apps.product import alpha, product_mask, scene
    from unmix.data.images import save_png, to_pil
    from unmix.metrics.quality import evaluate

    size = model.shape[-1]
    t = ProductTriples(size, "clutter", split, seed=seed).triples(range(n))
    names = ("unmix", "unmix-backdrop", "telea") if backdrop is not None else ("unmix", "telea")
    results: dict[str, list[torch.Tensor]] = {name: [] for name in names}
    exact, seconds = dict.fromkeys(names, 0), dict.fromkeys(names, 0.0)
    found = []
    for i in range(n):
        try:
            m = product_mask(alpha(model.denoiser, t.busy[i], size))
        except UnmixError:  # "no product found": the job's one line; counted, and left out of the measures
            continue
        found.append(i)
        start = time.perf_counter()
        made = {"unmix": scene(model.denoiser, t.busy[i], size, seed=i)}
        seconds["unmix"] += time.perf_counter() - start
        if backdrop is not None:
            start = time.perf_counter()
            made["unmix-backdrop"] = scene(model.denoiser, t.busy[i], size, backdrop=backdrop, seed=i)
            seconds["unmix-backdrop"] += time.perf_counter() - start
        start = time.perf_counter()
        made["telea"] = torch.where(m, t.busy[i], telea(t.busy[i], m))
        seconds["telea"] += time.perf_counter() - start
        for name, r in made.items():
            results[name].append(r)
            exact[name] += bool(torch.equal(r[:, m[0]], t.busy[i][:, m[0]]))
    stacked = {name: torch.stack(v) for name, v in results.items()}
    rows = {name: {"found": len(found) / n, "exact": exact[name] / len(found),
                   "edge": _edge_error(x, t.mask[found], t.white[found]),
                   "ms_per_image": seconds[name] / len(found) * 1000} for name, x in stacked.items()}
    references = {"clutter": dict(level="clutter"), "scenes": dict(level="plain", backgrounds="scenes")}
    for ref, kind in references.items():  # real photos: busy cluttered ones, and products on held-out scene photos
        stacked[f"real-{ref}"] = ProductTriples(size, split=split, seed=seed + 2, **kind).triples(range(len(found))).busy
        rows[f"real-{ref}"] = {}
        with tempfile.TemporaryDirectory() as folder:
            reference = ProductTriples(size, split=split, seed=seed + 1, **kind).triples(range(REFERENCE_PHOTOS)).busy
            for i, photo in enumerate(reference):
                save_png(to_pil(photo), Path(folder) / f"{i:04d}.png")
            for name, x in stacked.items():
                if name.startswith("real-") and name != f"real-{ref}":
                    continue
                q = evaluate(x, f"folder:{folder}")
                rows[name] |= {f"fd_{ref}": q["fd"], f"precision_{ref}": q["precision"], f"recall_{ref}": q["recall"]}
    return rows


def jobs(folder: Path, n: int, split: str, seed: int, out: Path | None, backdrop: Path | None = None) -> None:
    import unmix
    from unmix.apps.product import check_backdrop_model, check_product_model

    model = unmix.load(folder)
    check_product_model(model)
    scenery = None if backdrop is None else unmix.load(backdrop)
    if scenery is not None:
        check_backdrop_model(scenery)
    square = square_rows(model, n, split, seed)
    print(f"square: {n} held-out photos whose product is cut by the frame, {model.shape[-1]} px; median PSNR of the "
          "cut-off part")
    for name, r in square.items():
        print(f"  {name:8s} {r['psnr_cut_part']:7.2f} dB {r['ms_per_image']:8.1f} ms/img", flush=True)
    scenes = scene_rows(model, n, split, seed, scenery)
    print(f"scene: {n} held-out cluttered photos; FD / precision / recall against {REFERENCE_PHOTOS} other real "
          "photos (cluttered ones; products on held-out scene photos), product pixels exact, edge-band error (0..255)")
    for name, r in scenes.items():
        fds = "".join(f" {ref}: FD {r[f'fd_{ref}']:7.3f} P {r[f'precision_{ref}']:.3f} R {r[f'recall_{ref}']:.3f}"
                      for ref in ("clutter", "scenes") if f"fd_{ref}" in r)
        extra = (f" found {r['found']:.2f} exact {r['exact']:.2f} edge {r['edge']:6.2f} {r['ms_per_image']:8.1f} ms/img"
                 if "exact" in r else "")
        print(f"  {name:14s}{fds}{extra}", flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"n": n, "split": split, "seed": seed, "model": str(folder),
                                   "backdrop": None if backdrop is None else str(backdrop), "square": square,
                                   "scene": scenes}, indent=1))
