"""Measurements and pictures for the README's control section: guidance, inpainting and SDEdit.

    python benchmarks/control.py mixture    # inpainting vs the exact conditional of Gaussian mixtures
    python benchmarks/control.py train --cond label   # digits models, the held-out 10% excluded
    python benchmarks/control.py train --cond none
    python benchmarks/control.py classes    # class-conditional model: class accuracy + FD per guidance scale
    python benchmarks/control.py complete   # both models: bottom halves of the held-out digits
    python benchmarks/control.py ceiling    # the same with an exact denoiser of the training digits
    python benchmarks/control.py pictures   # docs/control_*.png
    python benchmarks/control.py report     # docs/control_results.md from the JSON the steps wrote

Each step writes its numbers as JSON under --work. Heavy: run one at a time, e.g.
`flock /tmp/unmix-heavy.lock python benchmarks/control.py digits`.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from unmix.analytic import GaussianMixture, digits_mixture
from unmix.data import Dataset, load_dataset
from unmix.edit import edit
from unmix.guidance import DEFAULT_GUIDANCE, ClassifierFreeGuidance
from unmix.inpaint import exact_conditional, holdout_split, inpaint
from unmix.metrics.exact import sliced_w2
from unmix.rng import generators_from_seeds
from unmix.samplers import DEFAULT_SAMPLER, sample

WORK = Path("runs/control")
DOCS = Path("docs")
BOTTOM = torch.zeros(1, 8, 8, dtype=torch.bool)
BOTTOM[:, 4:] = True  # fill in the bottom half, keep the top
GUIDANCE_SCALES = (1.0, 1.5, 2.0, 3.0)
NFE = 32  # what `unmix sample` uses by default
INPAINT_METHODS = {  # name: inpaint() settings
    "replace, ipndm": dict(method="replace", sampler="ipndm", nfe=32),
    "replace, ddpm": dict(method="replace", sampler="ddpm", nfe=32),
    "repaint j5 r4, ddpm": dict(method="repaint", sampler="ddpm", nfe=32, jump=5, repeats=4),
    "repaint j1 r10, ddpm": dict(method="repaint", sampler="ddpm", nfe=20, jump=1, repeats=10),
}


PICTURE_INPAINT = INPAINT_METHODS["repaint j1 r10, ddpm"]
EDIT_STRENGTHS = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)


def digits_split() -> tuple[Dataset, Dataset]:
    """The digits without / with only the fixed held-out 10% (unmix.inpaint.holdout_split, seed 0)."""
    ds = load_dataset("digits")
    train, held = holdout_split(len(ds))
    part = lambda idx: Dataset(ds.name, ds.data[idx], ds.labels[idx], ds.class_names, ds.info)  # noqa: E731
    return part(train), part(held)


def record(work: Path, name: str, obj) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{name}.json").write_text(json.dumps(obj, indent=1) + "\n")
    print(json.dumps(obj, indent=1))


# -- exact: inpainting a Gaussian mixture -----------------------------------------------------------
def four_clusters() -> GaussianMixture:
    """The test suite's 4-D mixture (1x2x2 images): the bottom row is decided by the top row."""
    means = 0.7 * torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1], [-1, 1, -1, 1]])
    return GaussianMixture(torch.full((4,), 0.25), means, torch.full((4, 4), 0.04), event_shape=(1, 2, 2))


def floored_digits_mixture() -> GaussianMixture:
    """The 64-D digits mixture with every pixel's std at least 0.1.

    The fitted mixture has pixels of std ~1e-3 (always-black borders); they decide the exact
    conditional at noise levels below any sampler's sigma_min, which no diffusion method can see.
    """
    g = digits_mixture(16)
    return GaussianMixture(g.weights, g.means, g.variances.clamp(min=0.01), event_shape=(1, 8, 8))


MIXTURE_RUNS = [  # (label, sampler, inpaint settings)
    *[(f"replace NFE {k}", s, dict(method="replace", nfe=k)) for s in ("ddpm", "euler") for k in (20, 50, 200, 1000)],
    *[(f"repaint j{j} r{r}, base NFE {k}", s, dict(method="repaint", nfe=k, jump=j, repeats=r))
      for s in ("ddpm", "euler") for k, j, r in ((20, 5, 4), (50, 10, 10), (20, 1, 10), (50, 1, 10), (50, 1, 20))],
]


def cmd_mixture(args) -> None:
    torch.set_num_threads(1)
    cases = {
        "four clusters (4-D, bottom row of 1x2x2)": (four_clusters(), torch.tensor([[[False, False], [True, True]]]),
                                                     [torch.tensor([[[0.7, 0.7], [0.0, 0.0]]], dtype=torch.float64)]),
        "digits mixture (64-D, bottom half of 8x8)": (floored_digits_mixture(), BOTTOM, None),
    }
    n = args.n
    results = []
    for name, (gm, mask, observations) in cases.items():
        if observations is None:  # typical observations: draws from the mixture itself
            observations = [gm.sample(1, torch.Generator().manual_seed(100 + i))[0] for i in range(args.observations)]
        truths, floors = [], []
        for i, y in enumerate(observations):
            cond = exact_conditional(gm, y, mask)
            truths.append(cond.sample(n, torch.Generator().manual_seed(1000 + i)))
            floors.append(sliced_w2(truths[-1], cond.sample(n, torch.Generator().manual_seed(2000 + i))))
        floor = sum(floors) / len(floors)
        for label, sampler, settings in MIXTURE_RUNS:
            errs, t = [], time.time()
            for y, truth in zip(observations, truths):
                x, used = inpaint(gm, y, mask, n, sampler=sampler, seed=0, return_nfe=True, **settings)
                errs.append(sliced_w2(x.reshape(n, -1)[:, mask.expand(gm.event_shape).reshape(-1)], truth))
            results.append({"distribution": name, "method": label, "sampler": sampler, "nfe": used,
                            "sw2": sum(errs) / len(errs), "floor": floor, "observations": len(observations),
                            "n": n, "seconds": round(time.time() - t, 1)})
            print(results[-1])
    record(args.work, "mixture", results)


# -- the trained digits model -----------------------------------------------------------------------
def cmd_train(args) -> None:
    from unmix.train import TrainConfig, Trainer

    train, _ = digits_split()
    cfg = TrainConfig(data="digits", cond=args.cond, out=str(args.work / f"digits-{args.cond}"), steps=args.steps,
                      threads=args.threads)
    t = time.time()
    result = Trainer(cfg, dataset=train).run(progress=True)
    record(args.work, f"train-{args.cond}", {"checkpoint": str(result.checkpoint), "steps": result.step, "items": len(train),
                                "minutes": round((time.time() - t) / 60, 1), "loss": result.last_stats.get("loss")})


def load_model(args, cond: str = "label"):
    from unmix.api import load

    torch.set_num_threads(args.threads)
    return load(args.work / f"digits-{cond}")


@torch.no_grad()
def draw(model, n: int, labels: torch.Tensor | None = None, scale: float = 1.0, batch: int = 500) -> torch.Tensor:
    """n samples (sample i from seed i) of `labels` at guidance `scale`, or unconditional when labels is None."""
    lo, hi = model.recipe.sigma_range()
    den = model.denoiser if labels is None else ClassifierFreeGuidance(model.denoiser, scale)
    out = []
    for a in range(0, n, batch):
        b = min(n, a + batch)
        out.append(sample(den, (b - a, *model.shape), DEFAULT_SAMPLER, NFE, generator=generators_from_seeds(range(a, b)),
                          cond=None if labels is None else labels[a:b], sigma_min=lo, sigma_max=hi).clamp(-1, 1))
    return torch.cat(out)


def classify(x: torch.Tensor) -> torch.Tensor:
    from unmix.metrics.features import reference

    with torch.no_grad():
        return reference("digits").net(x.float()).argmax(1)


def cmd_classes(args) -> None:
    """Class accuracy and FD of the class-conditional model per guidance scale, and unconditional."""
    from unmix.metrics.evaluate import evaluate

    model = load_model(args)
    n = args.n
    labels = torch.arange(n) % 10
    t = time.time()
    rows = [{"guidance": "unconditional", **_quality(evaluate(draw(model, n), "digits")),
             "seconds": round(time.time() - t)}]
    for w in GUIDANCE_SCALES:
        t = time.time()
        x = draw(model, n, labels, w)
        acc = float((classify(x) == labels).float().mean())
        rows.append({"guidance": w, "accuracy": acc, **_quality(evaluate(x, "digits")), "seconds": round(time.time() - t)})
        print(rows[-1])
    record(args.work, "classes", {"checkpoint": str(model.checkpoint), "n": n, "sampler": DEFAULT_SAMPLER, "nfe": NFE,
                                  "rows": rows})


def cmd_complete(args) -> None:
    """Bottom-half completion of every held-out digit (no label) by the --cond model, per method, scored by the
    classifier; rows of the other model already in complete.json are kept."""
    _, held = digits_split()
    y, truth = held.batch(torch.arange(len(held)))
    score = lambda x: float((classify(x.clamp(-1, 1)) == truth).float().mean())  # noqa: E731
    rows = [{"completion": "originals (classifier ceiling)", "accuracy": score(y)},
            {"completion": "top half only, bottom black", "accuracy": score(torch.where(BOTTOM, -1.0, y))}]
    done = args.work / "complete.json"
    if done.is_file():
        rows += [r for r in json.loads(done.read_text())["rows"] if r.get("model") not in (None, args.cond)]
    model = load_model(args, args.cond)
    for name, settings in INPAINT_METHODS.items():
        x, used = inpaint(model, y, BOTTOM, len(y), generator=generators_from_seeds(range(len(y))), return_nfe=True,
                          **settings)
        rows.append({"model": args.cond, "completion": name, "nfe": used, "accuracy": score(x)})
        print(rows[-1])
    record(args.work, "complete", {"held_out": len(held), "rows": rows})


def cmd_ceiling(args) -> None:
    """How well completion could do with a perfect model: an exact kernel-density denoiser of the training
    digits (std 0.1), through the same methods, and its exact conditional mean (no sampler at all)."""
    torch.set_num_threads(args.threads)
    train, held = digits_split()
    x0, _ = train.batch(torch.arange(len(train)))
    y, truth = held.batch(torch.arange(len(held)))
    kde = GaussianMixture(torch.full((len(x0),), 1 / len(x0)), x0.reshape(len(x0), -1), torch.full((len(x0),), 0.01),
                          event_shape=(1, 8, 8))
    score = lambda x: float((classify(x.float().clamp(-1, 1)) == truth).float().mean())  # noqa: E731
    rows = []
    for name, settings in INPAINT_METHODS.items():
        x, used = inpaint(kde, y.double(), BOTTOM, len(y), generator=generators_from_seeds(range(len(y))),
                          return_nfe=True, **settings)
        rows.append({"model": "exact KDE of the training digits", "completion": name, "nfe": used, "accuracy": score(x)})
        print(rows[-1])
    means = []
    for img in y.double():
        c = exact_conditional(kde, img, BOTTOM)
        means.append(torch.cat([img.reshape(-1)[:32], c.weights @ c.means]).reshape(1, 8, 8))
    rows.append({"model": "exact KDE of the training digits", "completion": "exact conditional mean (no sampling)",
                 "accuracy": score(torch.stack(means))})
    record(args.work, "ceiling", {"rows": rows})


def _quality(m: dict) -> dict:
    return {k: round(m[k], 4) for k in ("fd", "kid", "precision", "recall")}


# -- pictures --------------------------------------------------------------------------------------
def cmd_pictures(args) -> None:
    """The class grid (conditional model), inpainting and SDEdit examples (model trained without labels)."""
    from unmix.data.images import make_grid

    DOCS.mkdir(exist_ok=True)
    labels = torch.arange(10).repeat_interleave(10)  # one row per class
    x = draw(load_model(args, "label"), len(labels), labels, DEFAULT_GUIDANCE)
    make_grid(x, nrow=10, scale=6).save(DOCS / "control_classes.png")
    model = load_model(args, "none")
    _, held = digits_split()
    y, _ = held.batch(torch.arange(6))
    rows = []
    for img in y:
        done = inpaint(model, img, BOTTOM, 6, generator=generators_from_seeds(range(6)), **PICTURE_INPAINT).clamp(-1, 1)
        rows.append(torch.cat([img[None], torch.where(BOTTOM, 0.0, img)[None], done]))
    make_grid(torch.cat(rows), nrow=8, scale=6).save(DOCS / "control_inpaint.png")
    y, _ = held.batch(torch.arange(6, 10))
    tiles = [edit(model, img, s, 1, seed=0).clamp(-1, 1) for img in y for s in EDIT_STRENGTHS]
    make_grid(torch.cat(tiles), nrow=len(EDIT_STRENGTHS), scale=6).save(DOCS / "control_edit.png")


# -- the results page ------------------------------------------------------------------------------
USAGE = """## Steering: labels, guidance, inpainting, image-to-image

Every control is a wrapper around the one denoiser interface, so it works with every sampler.

```bash
unmix train --data digits --cond label --out runs/digits-cond      # labels dropped 10% of the time
unmix sample runs/digits-cond --label 3 --guidance 1.5             # classifier-free guidance
unmix inpaint runs/digits-cond digit.png --mask mask.png --n 8     # white = fill in, black = keep
unmix edit runs/digits-cond digit.png --strength 0.5               # SDEdit: 0 = unchanged, 1 = new sample
```

```python
import torch, unmix
from unmix.edit import edit
from unmix.guidance import ClassifierFreeGuidance
from unmix.inpaint import inpaint
from unmix.samplers import sample

model = unmix.load("runs/digits-cond")
threes = sample(ClassifierFreeGuidance(model.denoiser, 1.5), (16, 1, 8, 8), cond=torch.full((16,), 3))
filled = inpaint(model, image, mask, 8, method="repaint")   # image [1, 8, 8] in [-1, 1], mask True = fill in
edited = edit(model, image, strength=0.5, n=8)
```

Guidance costs one NFE per step, but each such call runs the network on a doubled batch (labelled and
unlabelled halves together). RePaint spends about `repeats` times the NFE of its grid.
"""


def cmd_report(args) -> None:
    """docs/control_results.md: the tables and pictures for the README's control section."""
    load = lambda name: json.loads((args.work / f"{name}.json").read_text())  # noqa: E731
    lines = [f"<!-- written by `python benchmarks/control.py report` on {time.strftime('%Y-%m-%d')}, "
             f"{platform.machine()} CPU, torch {torch.__version__} -->", "", USAGE]
    if (args.work / "mixture.json").is_file():
        rows = load("mixture")
        lines += ["### Inpainting against the exact answer", "",
                  "Exact Gaussian-mixture denoisers, so every error below is the method's, not a network's. "
                  "The filled-in coordinates given the known ones follow a re-weighted mixture "
                  "(`unmix.inpaint.exact_conditional`); the table gives the sliced W2 between "
                  f"{rows[0]['n']} completions and as many exact conditional samples, averaged over the "
                  "observations, and the floor (exact vs exact). NFE counts every denoiser call.", ""]
        for dist in dict.fromkeys(r["distribution"] for r in rows):
            sub = [r for r in rows if r["distribution"] == dist]
            lines += [f"**{dist}**, {sub[0]['observations']} observation(s), floor {sub[0]['floor']:.4f}", "",
                      "| method | sampler | NFE | sliced W2 | / floor |", "|---|---|---:|---:|---:|"]
            lines += [f"| {r['method']} | {r['sampler']} | {r['nfe']} | {r['sw2']:.4f} | {r['sw2'] / r['floor']:.1f}x |"
                      for r in sub]
            lines.append("")
    if (args.work / "classes.json").is_file():
        d, tr = load("classes"), load("train-label")
        lines += ["### Class-conditional digits", "",
                  f"The `unmix train --data digits --cond label` recipe ({tr['steps']} steps, {tr['minutes']} CPU minutes "
                  f"on a shared machine), trained on {tr['items']} digits: the fixed held-out 10% "
                  "(`unmix.inpaint.holdout_split`) never seen. "
                  f"{d['n']} samples per row ({d['n'] // 10} per class), {d['sampler']} at NFE {d['nfe']} "
                  "(a guided NFE is one call on a doubled batch); accuracy by the `unmix eval` digits classifier, "
                  "FD / KID / precision / recall in its feature space against all digits.", "",
                  "| guidance | class accuracy | FD | KID | precision | recall |", "|---|---:|---:|---:|---:|---:|"]
        for r in d["rows"]:
            acc = f"{100 * r['accuracy']:.1f}%" if "accuracy" in r else "-"
            lines.append(f"| {r['guidance']} | {acc} | {r['fd']:.2f} | {r['kid']:.4f} | {r['precision']:.3f} | "
                         f"{r['recall']:.3f} |")
        lines += ["", f"Default guidance: {DEFAULT_GUIDANCE}.", ""]
    if (args.work / "complete.json").is_file():
        d, tr = load("complete"), load("train-none")
        lines += ["### Completing held-out digits", "",
                  f"Bottom half filled in for each of the {d['held_out']} held-out digits, no label given; share "
                  "classified as the original digit (NFE counts every call). Models: `none` trained without labels "
                  f"({tr['steps']} steps, same split), `label` the class-conditional one above used without a label, "
                  "and an exact kernel-density denoiser of the training digits (std 0.1) as a perfect model. Even the "
                  "perfect model stays far below its exact conditional mean through these samplers: the gap to the "
                  "80% goal is the inpainting methods' bias (as in the mixture tables), not the networks.", "",
                  "| model | completion | NFE | accuracy |", "|---|---|---:|---:|"]
        rows = d["rows"] + (load("ceiling")["rows"] if (args.work / "ceiling.json").is_file() else [])
        lines += [f"| {r.get('model', '-')} | {r['completion']} | {r.get('nfe', '-')} | {100 * r['accuracy']:.1f}% |"
                  for r in rows]
        lines.append("")
    lines += ["### Pictures", "",
              f"![one row per class, guidance {DEFAULT_GUIDANCE}](docs/control_classes.png)", "",
              "![held-out digits: original, known top half, six RePaint (j1 r10, ddpm) completions]"
              "(docs/control_inpaint.png)", "",
              f"![SDEdit of held-out digits at strength {', '.join(map(str, EDIT_STRENGTHS))}](docs/control_edit.png)", ""]
    (DOCS / "control_results.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=["mixture", "train", "classes", "complete", "ceiling", "pictures", "report"])
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the digits preset)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cond", choices=["label", "none"], default="label", help="train: with labels or without")
    p.add_argument("--n", type=int, default=1000, help="samples per measurement")
    p.add_argument("--observations", type=int, default=8, help="observed images per mixture")
    args = p.parse_args()
    print(f"{platform.node()} {platform.processor()} torch {torch.__version__}")
    steps = {"mixture": cmd_mixture, "train": cmd_train, "classes": cmd_classes, "complete": cmd_complete,
             "ceiling": cmd_ceiling,
             "pictures": cmd_pictures,
             "report": cmd_report}
    steps[args.step](args)


if __name__ == "__main__":
    main()
