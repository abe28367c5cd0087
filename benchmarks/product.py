"""Busy photo -> product on white: unmix's *clean* against what a user would use without diffusion (issue 14).

On N seeded product triples (unmix.data.products, held-out products and backgrounds by default) this measures,
per image against the white-background truth, PSNR / SSIM and the IoU of the binary mask, and reports medians:

  grabcut       OpenCV GrabCut (Rother et al. 2004) with no user input: the rectangle is the whole frame less a
                1-px border, 5 iterations; its foreground (sure + probable) is kept, the rest turned white
  grabcut-feathered  the same with the one-pixel soft edge that unmix's refined alpha gets (unmix.apps.product.feather):
                the control that tells the model's share of a gain from the feathering's
  grabcut-box   the same given the true product box (what a user drawing a rectangle gives it)
  true-mask     the photo composited on white through the true binary mask (alpha > 0.5): the ceiling of any
                method that selects pixels rather than repaint them (edge pixels keep their background blend)
  unmix-...     a product model of `unmix train --data product` through the library's job (unmix.apps.product.alpha:
                GrabCut, then the model's alpha, refined by GrabCut seeded with it and feathered, the photo composited
                on white through it), per method; -unrefined: the model's own soft alpha

    python benchmarks/product.py --n 200 --size 64 --levels plain clutter          # the baselines alone
    python benchmarks/product.py clean runs/product64 --n 200 --levels plain clutter \\
        --methods mean sample --guidance 1.5                                                # a model beside them
    python benchmarks/product.py jobs runs/product64 --n 100 --backdrop runs/backgrounds32   # square and scene
    python benchmarks/product.py pictures runs/product64 --backdrop runs/backgrounds32 --out docs  # README pictures
    python benchmarks/product.py --smoke      # all four on toy models and a few photos, in a temporary folder

jobs measures *square* and *scene* on held-out photos, next to OpenCV's inpainting (Telea 2004, what a user would
reach for without diffusion), with the same product alpha (unmix's clean) for both, so only the filling differs:

  square        photos of level "cut" whose product reaches out of the frame: the frame is widened as the job does
                and the border filled (unmix: the model's outpainting; telea: cv2.inpaint of photo and alpha;
                white: no filling, the product stays cut); PSNR of the product's cut-off part (its true box outside
                the frame) against the whole product on white
  scene         cluttered photos: the product kept, a new background drawn around it (unmix: the scene job drawn
                by the product model itself; unmix-backdrop: drawn by the --backdrop model, `unmix train --data
                backgrounds`; telea: cv2.inpaint of everything outside the product, radius 5). "exact": the
                share of images whose product pixels (the job's own mask) are the photo's bit for bit; FD and
                precision/recall against --reference (1000) other held-out cluttered photos ("clutter") and as many
                held-out products on held-out scene photos ("scenes", unmix.data.background_photos.scene_photos), each in
                unmix eval's folder:PATH feature space trained on that set ("real-...": as many further real
                photos of the set, its floor); "found": the share where a product was found (the others are left
                out of every measure); "edge": the error in the 2-px band either side of the product's true edge,
                mean over channels of |a (result - 1) - (white - 1)| with a the true alpha, i.e. how far the
                result is from the true product composited over the result's own background (halos of the old
                background, product pixels painted over), mean, in 0..255 levels

Needs opencv-python-headless (works offline). Times are this process's wall clock per image at 1 thread (the
model's rows include its GrabCut).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unmix.apps.product import feather
from unmix.data.grabcut import grabcut_mask
from unmix.data.products import LEVELS, ProductTriples, glyph, paste
from unmix.errors import UnmixError
from unmix.metrics.product import composite_on_white, mask_iou, psnr, ssim

SQUARE_BORDER = 0.25  # unmix.apps.product.square_photo's default


def _row(pred: torch.Tensor, masks: torch.Tensor, t, ms: float) -> dict[str, float]:
    return {"psnr": float(psnr(pred, t.white).median()), "ssim": float(ssim(pred, t.white).median()),
            "iou": float(mask_iou(masks, t.mask).median()), "ms_per_image": ms}


def measure(level: str, n: int, size: int, split: str, seed: int) -> dict[str, dict[str, float]]:
    """Median PSNR / SSIM / mask IoU and mean ms per image of each baseline on n triples."""
    t = ProductTriples(size, level, split, seed=seed).triples(range(n))
    methods = {
        "grabcut": lambda i: grabcut_mask(t.busy[i]),
        "grabcut-feathered": lambda i: feather(grabcut_mask(t.busy[i])),
        "grabcut-box": lambda i: grabcut_mask(t.busy[i], tuple(int(v) for v in t.box[i])),
        "true-mask": lambda i: (t.mask[i] > 0.5).float(),
    }
    out = {}
    for name, fn in methods.items():
        start = time.perf_counter()
        masks = torch.stack([fn(i) for i in range(n)])
        out[name] = _row(composite_on_white(t.busy, masks), (masks > 0.5).float(), t,
                         (time.perf_counter() - start) / n * 1000)
    return out


def model_rows(folder: Path, level: str, n: int, split: str, seed: int, methods, guidances, nfe: int):
    """A product model's *clean* (unmix.apps.product.alpha, then on_white) on the same triples, per method and
    guidance scale (None: plain conditional), each image through the library call as a user's photo would go."""
    import functools

    import unmix
    from unmix.apps.product import alpha, check_product_model, on_white
    from unmix.guidance import ClassifierFreeGuidance

    model = unmix.load(folder)
    check_product_model(model)
    size = model.shape[-1]
    t = ProductTriples(size, level, split, seed=seed).triples(range(n))
    out = {}
    for method in methods:
        for w in guidances:
            for refine in (True, False):
                g = None if w is None else functools.partial(ClassifierFreeGuidance, scale=w)
                start = time.perf_counter()
                a = torch.stack([alpha(model.denoiser, t.busy[i], size, method=method, refine=refine, nfe=nfe,
                                       guidance=g) for i in range(n)])
                ms = (time.perf_counter() - start) / n * 1000
                name = (f"unmix-{method}" + (f"-{nfe}nfe" if method == "sample" else "") + (f"-w{w:g}" if w else "")
                        + ("" if refine else "-unrefined"))
                out[name] = _row(on_white(t.busy, a), (a > 0.5).float(), t, ms)
    return size, out


def pictures(folder: Path, out: Path, n: int = 8, seed: int = 0, backdrop: Path | None = None) -> None:
    """The README's pictures: n held-out clutter photos as rows of busy | GrabCut | clean | square | scene | truth
    (product_jobs_grid.png, each tile at the model's size, square resized to it; grey where a job found no
    product), and skimage's coffee photo (held out, 600x400) as photo | clean | scene | square
    (product_coffee.png); the scenes drawn by the `backdrop` model when one is given."""
    import skimage.data

    import unmix
    from unmix.apps.product import check_product_model, fit, run_job
    from unmix.data.images import make_grid, save_png, to_pil
    from unmix.show import row

    model = unmix.load(folder)
    check_product_model(model)
    scenery = None if backdrop is None else unmix.load(backdrop)
    size = model.shape[-1]
    t = ProductTriples(size, "clutter", "test", seed=seed).triples(range(n))

    def job_or_grey(job, photo, seed):  # grey: the job's "no product found" (its mask is empty)
        try:
            return run_job(job, model, photo, seed=seed, backdrop=scenery if job == "scene" else None)
        except UnmixError:
            return torch.zeros(3, size, size)

    tiles = []
    for i in range(n):
        jobs = {job: job_or_grey(job, t.busy[i], i) for job in ("clean", "square", "scene")}
        tiles += [t.busy[i], composite_on_white(t.busy[i:i + 1], grabcut_mask(t.busy[i])[None])[0], jobs["clean"],
                  fit(jobs["square"], size), jobs["scene"], t.white[i]]
    out.mkdir(parents=True, exist_ok=True)
    save_png(make_grid(torch.stack(tiles), nrow=6, scale=2), out / "product_jobs_grid.png")
    coffee = torch.from_numpy(skimage.data.coffee()).permute(2, 0, 1).float() / 127.5 - 1
    jobs = [run_job(job, model, coffee, backdrop=scenery if job == "scene" else None)
            for job in ("clean", "scene", "square")]
    side = coffee.shape[1]
    save_png(row([to_pil(coffee), to_pil(jobs[0]), to_pil(jobs[1]), to_pil(fit(jobs[2], side))], gap=8),
             out / "product_coffee.png")
    print(f"wrote {out / 'product_jobs_grid.png'} and {out / 'product_coffee.png'}")


# -- jobs: *square* and *scene* against OpenCV's inpainting -------------------------------------------------
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
    """The uncut product on white in the widened frame, and its alpha: the truth of *square*'s filling (the glyph
    resized to its box, as unmix.data.products pasted it)."""
    top, left, h, w = (int(v) for v in box)
    rgba = F.interpolate(glyph(product)[None], size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]
    rgba = rgba.clamp(0, 1)
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
    """Mean over images of the 2-px edge band error (see the docstring above), in 0..255 levels."""
    hard = (mask > 0.5).float()
    band = (F.max_pool2d(hard, 5, 1, 2) - (-F.max_pool2d(-hard, 5, 1, 2))) > 0
    err = (mask * (result - 1) + 1 - white).abs().sum(1, keepdim=True) / 3 * 127.5
    return float(torch.stack([e[b].mean() for e, b in zip(err, band)]).mean())


def scene_rows(model, n: int, split: str, seed: int, backdrop=None, reference_photos: int = 1000
               ) -> dict[str, dict[str, float]]:
    from unmix.apps.product import alpha, product_mask, scene
    from unmix.data.images import save_png, to_pil
    from unmix.metrics.quality import evaluate, min_samples

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
    if len(found) < min_samples("folder:"):  # FD needs more photos than feature dimensions
        print(f"scene: FD left out, {len(found)} photos are too few (it needs {min_samples('folder:')})")
        return rows
    references = {"clutter": dict(level="clutter"), "scenes": dict(level="plain", backgrounds="scenes")}
    for ref, kind in references.items():  # real photos: busy cluttered ones, and products on held-out scene photos
        stacked[f"real-{ref}"] = ProductTriples(size, split=split, seed=seed + 2, **kind).triples(range(len(found))).busy
        rows[f"real-{ref}"] = {}
        with tempfile.TemporaryDirectory() as folder:
            reference = ProductTriples(size, split=split, seed=seed + 1, **kind).triples(range(reference_photos)).busy
            for i, photo in enumerate(reference):
                save_png(to_pil(photo), Path(folder) / f"{i:04d}.png")
            for name, x in stacked.items():
                if name.startswith("real-") and name != f"real-{ref}":
                    continue
                q = evaluate(x, f"folder:{folder}")
                rows[name] |= {f"fd_{ref}": q["fd"], f"precision_{ref}": q["precision"], f"recall_{ref}": q["recall"]}
    return rows


def jobs(folder: Path, n: int, split: str, seed: int, out: Path | None, backdrop: Path | None = None,
         reference_photos: int = 1000) -> None:
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
    scenes = scene_rows(model, n, split, seed, scenery, reference_photos)
    print(f"scene: {n} held-out cluttered photos; FD / precision / recall against {reference_photos} other real "
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


def _table(level: str, rows: dict[str, dict[str, float]]) -> None:
    for name, r in rows.items():
        print(f"{level:8s} {name:28s} {r['psnr']:8.2f} {r['ssim']:6.3f} {r['iou']:6.3f} {r['ms_per_image']:7.1f}",
              flush=True)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", nargs="?", choices=("clean", "jobs", "pictures"),
                    help="clean MODEL: a product model beside the baselines; jobs MODEL: square and scene; "
                         "pictures MODEL --out DIR: README pictures")
    ap.add_argument("folder", type=Path, nargs="?")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", type=int, default=64, help="baselines alone: the frame side (a model sets its own)")
    ap.add_argument("--levels", nargs="+", default=["plain", "clutter"], choices=LEVELS)
    ap.add_argument("--split", default="test", choices=("train", "test"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", nargs="+", default=["mean"], choices=("mean", "sample"))
    ap.add_argument("--guidance", nargs="+", type=float, default=[], help="also these guidance scales on the photo")
    ap.add_argument("--nfe", type=int, default=33, help="the sample method's grid")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--out", type=Path, default=Path("docs"), help="pictures: the folder to write them to")
    ap.add_argument("--backdrop", type=Path, default=None, help="jobs, pictures: a model of backgrounds for scene "
                    "(unmix train --data backgrounds)")
    ap.add_argument("--reference", type=int, default=1000, help="jobs: real photos each scene FD is measured against")
    ap.add_argument("--smoke", action="store_true", help="every command on toy models and a few photos (CI)")
    a = ap.parse_args()
    if a.smoke:
        return smoke()
    if a.command and a.folder is None:
        ap.error(f"{a.command} needs a product model folder")
    if a.command == "pictures":
        return pictures(a.folder, a.out, backdrop=a.backdrop)
    if a.command == "jobs":
        return jobs(a.folder, a.n, a.split, a.seed, a.json, a.backdrop, a.reference)
    results = {}
    size = a.size
    for level in a.levels:
        rows = {}
        if a.command == "clean":
            size, rows = model_rows(a.folder, level, a.n, a.split, a.seed, a.methods, [None, *a.guidance], a.nfe)
        if not results:
            print(f"{a.n} triples, {size} px, split {a.split}, seed {a.seed}: medians")
            print(f"{'level':8s} {'method':28s} {'PSNR dB':>8s} {'SSIM':>6s} {'IoU':>6s} {'ms/img':>7s}")
        results[level] = {**measure(level, a.n, size, a.split, a.seed), **rows}
        _table(level, results[level])
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"n": a.n, "size": size, "split": a.split, "seed": a.seed, "model": str(a.folder),
                                      "results": results}, indent=1))


def smoke() -> None:
    """Toy product and backdrop models (a few training steps at 32 px), then the baselines beside the model, the jobs
    and the pictures on a few photos, all in a temporary folder; skipped without OpenCV."""
    import unmix

    if importlib.util.find_spec("cv2") is None:
        return print("smoke skipped: OpenCV is not installed (pip install -e .[product])")
    with tempfile.TemporaryDirectory() as tmp:
        tiny = dict(size=32, steps=2, net={"channels": 16}, threads=1, progress=False)
        unmix.train("product", out=f"{tmp}/product", **tiny)
        unmix.train("backgrounds", out=f"{tmp}/backgrounds", **tiny)
        model, backdrop = Path(tmp) / "product", Path(tmp) / "backgrounds"
        _table("clutter", {**measure("clutter", 3, 32, "test", 0),
                           **model_rows(model, "clutter", 3, "test", 0, ["mean", "sample"], [None, 1.5], 3)[1]})
        jobs(model, 2, "test", 0, Path(tmp) / "jobs.json", backdrop)
        pictures(model, Path(tmp) / "pictures", n=2, backdrop=backdrop)


if __name__ == "__main__":
    main()
