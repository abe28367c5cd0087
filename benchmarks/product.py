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
                precision/recall against 1000 other held-out cluttered photos ("clutter") and against 1000
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
import json
import time
from pathlib import Path

import torch

from unmix.apps.product import feather
from unmix.data.grabcut import grabcut_mask
from unmix.data.products import LEVELS, ProductTriples
from unmix.errors import UnmixError
from unmix.metrics.product import composite_on_white, mask_iou, psnr, ssim


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
    a = ap.parse_args()
    if a.command and a.folder is None:
        ap.error(f"{a.command} needs a product model folder")
    if a.command == "pictures":
        return pictures(a.folder, a.out, backdrop=a.backdrop)
    if a.command == "jobs":
        from product_jobs import jobs

        return jobs(a.folder, a.n, a.split, a.seed, a.json, a.backdrop)
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


if __name__ == "__main__":
    main()
