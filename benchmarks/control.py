"""Measurements and pictures for the README's control section: guidance, inpainting and SDEdit.

    python benchmarks/control.py mixture    # inpainting vs the exact conditional of Gaussian mixtures
    python benchmarks/control.py train --cond label   # digits models, the held-out 10% excluded
    python benchmarks/control.py train --cond none
    python benchmarks/control.py classes    # class-conditional model: class accuracy + FD per guidance scale
    python benchmarks/control.py tune --cond none   # guided inpainting's weight, on training digits only
    python benchmarks/control.py complete   # both models: bottom halves of the held-out digits
    python benchmarks/control.py ceiling    # the same with an exact denoiser of the training digits
    python benchmarks/control.py pictures   # docs/control_*.png
    python benchmarks/control.py report     # docs/control_results.md from the JSON the steps wrote
    python benchmarks/control.py --smoke    # every step at toy size (a tiny network, a few digits) in a temporary folder

Each step writes its numbers as JSON under --work (pictures and the report: under --docs). Heavy: run one at a
time, e.g. `flock /tmp/unmix-heavy.lock python benchmarks/control.py classes`.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from unmix.analytic import GaussianMixture, digits_mixture
from unmix.data import Dataset, load_dataset
from unmix.distributed import machine
from unmix.edit import edit
from unmix.guidance import DEFAULT_GUIDANCE
from unmix.inpaint import exact_conditional, holdout_split, inpaint
from unmix.metrics.exact import sliced_w2
from unmix.rng import generators_from_seeds
from unmix.samplers import DEFAULT_SAMPLER
from unmix.training import trainer
from unmix.training.config import TrainConfig

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
    # reconstruction guidance: a 32-step grid, each call a forward and a backward pass (64 NFE); w = 1 is
    # the Gaussian approximation's own weight, w = 2 the best on the tuning digits (`tune`), not on these
    "guided w1, ddpm": dict(method="guided", sampler="ddpm", nfe=32, weight=1.0),
    "guided w2, ddpm": dict(method="guided", sampler="ddpm", nfe=32, weight=2.0),
    "guided w2, ipndm": dict(method="guided", sampler="ipndm", nfe=32, weight=2.0),
    # RePaint's resampling with guided calls, j5 r4; on the tuning digits w1 did best for the KDE, w2 for the network
    "guided repaint w1 j5 r4, ddpm": dict(method="guided_repaint", sampler="ddpm", nfe=32, jump=5, repeats=4,
                                          weight=1.0),
    "guided repaint w2 j5 r4, ddpm": dict(method="guided_repaint", sampler="ddpm", nfe=32, jump=5, repeats=4,
                                          weight=2.0),
}


PICTURE_INPAINT = "guided repaint w2 j5 r4, ddpm"  # the INPAINT_METHODS entry the inpainting picture shows
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
    # each guided call is a forward and a backward pass (2 NFE): grids of k / 2 steps for k NFE
    *[(f"guided w{w:g}, NFE {k}", s, dict(method="guided", nfe=k // 2, weight=w))
      for s in ("ddpm", "euler") for w in (1.0, 2.0) for k in (20, 50, 200)],
    *[(f"guided repaint w1 j5 r4, base NFE {k}", s, dict(method="guided_repaint", nfe=k, jump=5, repeats=4, weight=1.0))
      for s in ("ddpm", "euler") for k in (20,)],
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
            if args.only and not label.startswith(args.only):
                continue
            errs, t = [], time.time()
            for y, truth in zip(observations, truths):
                x, used = inpaint(gm, y, mask, n, sampler=sampler, seed=0, return_nfe=True, **settings)
                errs.append(sliced_w2(x.reshape(n, -1)[:, mask.expand(gm.event_shape).reshape(-1)], truth))
            results.append({"distribution": name, "method": label, "sampler": sampler, "nfe": used,
                            "sw2": sum(errs) / len(errs), "floor": floor, "observations": len(observations),
                            "n": n, "seconds": round(time.time() - t, 1)})
            print(results[-1])
    if args.only and (args.work / "mixture.json").is_file():  # keep the other runs' rows, in the runs' order
        kept = [r for r in json.loads((args.work / "mixture.json").read_text())
                if not r["method"].startswith(args.only)]
        order = {(label, sampler): i for i, (label, sampler, _) in enumerate(MIXTURE_RUNS)}
        results = sorted(kept + results, key=lambda r: (list(cases).index(r["distribution"]),
                                                        order.get((r["method"], r["sampler"]), -1)))
    record(args.work, "mixture", results)


# -- the trained digits model -----------------------------------------------------------------------
def cmd_train(args) -> None:
    train, _ = digits_split()
    cfg = TrainConfig(data="digits", cond=args.cond, out=str(args.work / f"digits-{args.cond}"), steps=args.steps,
                      threads=args.threads, nfe=args.nfe, net={"channels": args.channels} if args.channels else {})
    t = time.time()
    result = trainer.start(cfg, train).train(progress=not args.smoke)
    record(args.work, f"train-{args.cond}", {"checkpoint": str(result.checkpoint), "steps": result.step, "items": len(train),
                                "minutes": round((time.time() - t) / 60, 1), "loss": result.last_stats.get("loss")})


def load_model(args, cond: str = "label"):
    from unmix.api import load

    torch.set_num_threads(args.threads)
    return load(args.work / f"digits-{cond}")


def draw(model, n: int, nfe: int, labels: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """n samples (sample i from seed i) of `labels` at guidance `scale`, or unconditional when labels is None."""
    return model.sample(n, seed=0, sampler=DEFAULT_SAMPLER, nfe=nfe, labels=labels,
                        guidance=None if labels is None else scale, batch_size=500)


def classify(x: torch.Tensor) -> torch.Tensor:
    from unmix.metrics.features import reference

    with torch.no_grad():
        return reference("digits").net(x.float()).argmax(1)


def cmd_classes(args) -> None:
    """Class accuracy and FD of the class-conditional model per guidance scale, and unconditional."""
    from unmix.metrics.quality import evaluate

    model = load_model(args)
    n = args.n
    labels = torch.arange(n) % 10
    t = time.time()
    rows = [{"guidance": "unconditional", **_quality(evaluate(draw(model, n, args.nfe), "digits")),
             "seconds": round(time.time() - t)}]
    for w in GUIDANCE_SCALES:
        t = time.time()
        x = draw(model, n, args.nfe, labels, w)
        acc = float((classify(x) == labels).float().mean())
        rows.append({"guidance": w, "accuracy": acc, **_quality(evaluate(x, "digits")), "seconds": round(time.time() - t)})
        print(rows[-1])
    record(args.work, "classes", {"checkpoint": str(model.checkpoint), "n": n, "sampler": DEFAULT_SAMPLER,
                                  "nfe": args.nfe, "rows": rows})


TUNE_WEIGHTS = (1.0, 2.0, 3.0, 4.0)
TUNE_SAMPLERS = ("ddpm", "ipndm")
TUNE_REPAINT_WEIGHTS = (1.0, 1.5, 2.0)


def tuning_digits(count: int = 180) -> tuple[Dataset, torch.Tensor]:
    """(training digits, indices of `count` of them): the tuning set for guided inpainting's weight.

    Drawn from the training split only (seed 123), so the held-out digits that `complete` reports
    play no part in choosing the weight. The networks saw these digits, the leave-out KDE in cmd_tune
    does not."""
    train, _ = digits_split()
    return train, torch.randperm(len(train), generator=torch.Generator().manual_seed(123))[:count]


def kde_of(x0: torch.Tensor, std: float = 0.1) -> GaussianMixture:
    """The exact kernel-density denoiser of the digits x0 [N, 1, 8, 8]: a 'perfect model' of them."""
    return GaussianMixture(torch.full((len(x0),), 1 / len(x0)), x0.reshape(len(x0), -1).double(),
                           torch.full((len(x0),), std**2), event_shape=(1, 8, 8))


def cmd_tune(args) -> None:
    """Accuracy of guided inpainting per sampler and weight on the tuning digits (never the held-out ones),
    for the --cond model and for a KDE of the training digits without the tuning digits. Guided runs walk a
    32-step grid; guided_repaint runs add RePaint's j5 r4 resampling (ddpm). --only METHOD reruns that
    method's rows and keeps the others."""
    train, tune = tuning_digits(args.limit or 180)
    x0, labels = train.batch(torch.arange(len(train)))
    y, truth = x0[tune], labels[tune]
    rest = torch.ones(len(x0), dtype=torch.bool)
    rest[tune] = False
    score = lambda x: float((classify(x.float().clamp(-1, 1)) == truth).float().mean())  # noqa: E731
    models = {"kde": kde_of(x0[rest]), args.cond: load_model(args, args.cond)}
    runs = [("replace" if w == 0 else "guided", sampler, w, {}) for sampler in TUNE_SAMPLERS for w in (0.0, *TUNE_WEIGHTS)]
    runs += [("guided_repaint", "ddpm", w, dict(jump=5, repeats=4)) for w in TUNE_REPAINT_WEIGHTS]
    rows = []
    for name, model in models.items():
        yy = y.double() if name == "kde" else y
        for method, sampler, w, extra in runs:
            if args.only and method != args.only:
                continue
            x, used = inpaint(model, yy, BOTTOM, len(y), method=method, sampler=sampler, nfe=32, weight=w,
                              generator=generators_from_seeds(range(len(y))), return_nfe=True, **extra)
            rows.append({"model": name, "method": method, "sampler": sampler, "weight": w, **extra, "nfe": used,
                         "accuracy": score(x)})
            print(rows[-1])
    done = args.work / f"tune-{args.cond}.json"
    if args.only and done.is_file():
        old = json.loads(done.read_text())["rows"]
        rows = [{"method": "replace" if r["weight"] == 0 else "guided", **r} for r in old
                if r.get("method", "guided") != args.only] + rows
    record(args.work, f"tune-{args.cond}", {"tuning_digits": len(tune), "grid_nfe": 32, "rows": rows})


def cmd_complete(args) -> None:
    """Bottom-half completion of every held-out digit (no label) by the --cond model, per method, scored by the
    classifier; rows of the other model already in complete.json are kept."""
    _, held = digits_split()
    y, truth = held.batch(torch.arange(args.limit or len(held)))
    score = lambda x: float((classify(x.clamp(-1, 1)) == truth).float().mean())  # noqa: E731
    rows = [{"completion": "originals (classifier ceiling)", "accuracy": score(y)},
            {"completion": "top half only, bottom black", "accuracy": score(torch.where(BOTTOM, -1.0, y))}]
    done = args.work / "complete.json"
    if done.is_file():  # keep the other model's rows, and with --only this model's other methods
        rows += [r for r in json.loads(done.read_text())["rows"] if r.get("model") not in (None, args.cond)
                 or (args.only and not r["completion"].startswith(args.only) and r["completion"] in INPAINT_METHODS)]
    rows.sort(key=lambda r: (r.get("model", ""), list(INPAINT_METHODS).index(r["completion"])
                             if r["completion"] in INPAINT_METHODS else -1))
    model = load_model(args, args.cond)
    for name, settings in INPAINT_METHODS.items():
        if args.only and not name.startswith(args.only):
            continue
        x, used = inpaint(model, y, BOTTOM, len(y), generator=generators_from_seeds(range(len(y))), return_nfe=True,
                          **settings)
        rows.append({"model": args.cond, "completion": name, "nfe": used, "accuracy": score(x)})
        print(rows[-1])
    rows.sort(key=lambda r: (r.get("model", ""), list(INPAINT_METHODS).index(r["completion"])
                             if r["completion"] in INPAINT_METHODS else -1))
    record(args.work, "complete", {"held_out": len(y), "rows": rows})


def cmd_ceiling(args) -> None:
    """How well completion could do with a perfect model: an exact kernel-density denoiser of the training
    digits (std 0.1), through the same methods, and its exact conditional mean (no sampler at all)."""
    torch.set_num_threads(args.threads)
    train, held = digits_split()
    x0, _ = train.batch(torch.arange(len(train)))
    y, truth = held.batch(torch.arange(args.limit or len(held)))
    kde = kde_of(x0)
    score = lambda x: float((classify(x.float().clamp(-1, 1)) == truth).float().mean())  # noqa: E731
    rows = []
    for name, settings in INPAINT_METHODS.items():
        if args.only and not name.startswith(args.only):
            continue
        x, used = inpaint(kde, y.double(), BOTTOM, len(y), generator=generators_from_seeds(range(len(y))),
                          return_nfe=True, **settings)
        rows.append({"model": "exact KDE of the training digits", "completion": name, "nfe": used, "accuracy": score(x)})
        print(rows[-1])
    conds = [exact_conditional(kde, img, BOTTOM) for img in y.double()]
    top = y.double().reshape(len(y), -1)[:, :32]
    means = torch.stack([torch.cat([t, c.weights @ c.means]) for t, c in zip(top, conds)]).reshape(-1, 1, 8, 8)
    rows.append({"model": "exact KDE of the training digits", "completion": "exact conditional mean (no sampling)",
                 "accuracy": score(means)})
    draws = []  # faithful sampling with no method in between: the bottom half drawn from the exact conditional
    for seed in range(args.draws):
        g = torch.Generator().manual_seed(seed)
        x = torch.stack([torch.cat([t, c.sample(1, g)[0]]) for t, c in zip(top, conds)]).reshape(-1, 1, 8, 8)
        draws.append(score(x))
    acc = torch.tensor(draws)
    rows.append({"model": "exact KDE of the training digits",
                 "completion": f"exact conditional samples (no sampler; mean of {args.draws} draws, "
                               f"range {100 * acc.min():.1f}-{100 * acc.max():.1f}%)",
                 "accuracy": float(acc.mean())})
    print(rows[-2:])
    record(args.work, "ceiling", {"rows": rows})


def _percent(accuracy: dict, weight: float) -> str:
    """A table cell: the accuracy at this weight, or "-" where a partial run (--only) did not measure it."""
    return f"{100 * accuracy[weight]:.1f}%" if weight in accuracy else "-"


def _quality(m: dict) -> dict:
    return {k: round(m[k], 4) for k in ("fd", "kid", "precision", "recall")}


# -- pictures --------------------------------------------------------------------------------------
def cmd_pictures(args) -> None:
    """The class grid (conditional model), inpainting and SDEdit examples (model trained without labels)."""
    from unmix.data.images import make_grid

    args.docs.mkdir(parents=True, exist_ok=True)
    if args.picture in ("all", "classes"):
        labels = torch.arange(10).repeat_interleave(10)  # one row per class
        x = draw(load_model(args, "label"), len(labels), args.nfe, labels, DEFAULT_GUIDANCE)
        make_grid(x, nrow=10, scale=6).save(args.docs / "control_classes.png")
    model = load_model(args, "none")
    _, held = digits_split()
    if args.picture in ("all", "inpaint"):
        y, _ = held.batch(torch.arange(6))
        rows = []
        for img in y:
            done = inpaint(model, img, BOTTOM, 6, generator=generators_from_seeds(range(6)),
                           **INPAINT_METHODS[args.picture_method]).clamp(-1, 1)
            rows.append(torch.cat([img[None], torch.where(BOTTOM, 0.0, img)[None], done]))
        make_grid(torch.cat(rows), nrow=8, scale=6).save(args.docs / "control_inpaint.png")
    if args.picture not in ("all", "edit"):
        return
    y, _ = held.batch(torch.arange(6, 10))
    tiles = [edit(model, img, s, 1, seed=0).clamp(-1, 1) for img in y for s in EDIT_STRENGTHS]
    make_grid(torch.cat(tiles), nrow=len(EDIT_STRENGTHS), scale=6).save(args.docs / "control_edit.png")


# -- the results page ------------------------------------------------------------------------------
USAGE = """## Steering: labels, guidance, inpainting, image-to-image

Every control is a wrapper around the one denoiser interface, so it works with every sampler.

```bash
unmix train --data digits --cond label --out runs/digits-cond      # labels dropped 10% of the time
unmix sample runs/digits-cond --label 3 --guidance 1.5             # classifier-free guidance
unmix inpaint runs/digits-cond digit.png --mask mask.png --n 8     # white = fill in, black = keep
unmix inpaint runs/digits-cond digit.png --mask mask.png --method guided_repaint --weight 2 --sampler ddpm --nfe 32
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
filled = inpaint(model, image, mask, 8, method="guided_repaint", sampler="ddpm", nfe=32, weight=2.0)  # True = fill in
edited = edit(model, image, strength=0.5, n=8)
```

Guidance costs one NFE per step, but each such call runs the network on a doubled batch (labelled and
unlabelled halves together). RePaint spends about `repeats` times the NFE of its grid. Reconstruction
guidance (`--method guided`) walks its grid once, but every call runs the network forward and backward
(the gradient of the known pixels' error through the network); it is counted as 2 NFE per call, and on
the digits network a guided run takes about twice the time of plain replacement on the same grid.
"""


def _mixture_section(rows: list[dict]) -> list[str]:
    """Inpainting against the exact answer: sliced W2 per method, sampler and NFE."""
    lines = ["### Inpainting against the exact answer", "",
             "Exact Gaussian-mixture denoisers, so every error below is the method's, not a network's. "
             "The filled-in coordinates given the known ones follow a re-weighted mixture "
             "(`unmix.inpaint.exact_conditional`); the table gives the sliced W2 between "
             f"{rows[0]['n']} completions and as many exact conditional samples, averaged over the "
             "observations, and the floor (exact vs exact). NFE counts every denoiser call; a guided call (forward "
             "and backward pass) counts as 2, so guided NFE k walks a grid of k / 2 steps.", ""]
    for dist in dict.fromkeys(r["distribution"] for r in rows):
        sub = [r for r in rows if r["distribution"] == dist]
        lines += [f"**{dist}**, {sub[0]['observations']} observation(s), floor {sub[0]['floor']:.4f}", "",
                  "| method | sampler | NFE | sliced W2 | / floor |", "|---|---|---:|---:|---:|"]
        lines += [f"| {r['method']} | {r['sampler']} | {r['nfe']} | {r['sw2']:.4f} | {r['sw2'] / r['floor']:.1f}x |"
                  for r in sub]
        lines.append("")
    if any(r["method"].startswith("guided") for r in rows):
        lines += ["Reconstruction guidance at weight 1 (its Gaussian approximation's own weight) is 1.7 to 4.3 times "
                  "closer to the exact answer than replacement at the same NFE. Weight 2 is mostly further from it "
                  "(all but the digits mixture with ddpm at NFE 200): it leans harder on the observation than the "
                  "exact conditional does. On the network it still completes digits better below, so part of that "
                  "gain may be sharpening rather than more faithful sampling.", ""]
    return lines


def _classes_section(d: dict, tr: dict) -> list[str]:
    """Class-conditional digits: accuracy and feature-space metrics per guidance scale."""
    lines = ["### Class-conditional digits", "",
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
    return lines


def _complete_section(d: dict, tr: dict, ceiling: list[dict]) -> list[str]:
    """Completing held-out digits: accuracy per model, completion and NFE (`ceiling`: the perfect models' rows)."""
    lines = ["### Completing held-out digits", "",
             f"Bottom half filled in for each of the {d['held_out']} held-out digits, no label given; share "
             "classified as the original digit (NFE counts every call). Models: `none` trained without labels "
             f"({tr['steps']} steps, same split), `label` the class-conditional one above used without a label, "
             "and an exact kernel-density denoiser of the training digits (std 0.1) as a perfect model. For that "
             "perfect model the exact answer is known: its conditional mean, and exact samples from its "
             "conditional (a training digit drawn with probability proportional to how well its top half matches, "
             "plus the kernel's noise) need no sampler at all. Faithful sampling of a perfect model thus reaches "
             "the 80% goal; replacement and RePaint stay far below it even with the perfect model, which is "
             "their bias, not the networks'. Reconstruction guidance (`guided`, each call a forward and a "
             "backward pass, counted as 2 NFE) closes most of that gap, and with RePaint's resampling on top "
             "(`guided repaint`) both networks pass 80% at w = 2. The guidance weights were chosen "
             "on training digits only (next table), never on these: w = 2 was the best for the network, w = 1 "
             "for the KDE; both are shown.", "",
             "| model | completion | NFE | accuracy |", "|---|---|---:|---:|"]
    rows = d["rows"] + ceiling
    lines += [f"| {r.get('model', '-')} | {r['completion']} | {r.get('nfe', '-')} | {100 * r['accuracy']:.1f}% |"
              for r in rows]
    lines.append("")
    return lines


def _tune_section(d: dict) -> list[str]:
    """Choosing the guidance weight on training digits: accuracy per model, sampler and weight."""
    lines = ["### Choosing the guidance weight", "",
             f"`benchmarks/control.py tune`: the bottom halves of {d['tuning_digits']} *training* digits (a fixed "
             "draw, seed 123), completed with a grid of "
             f"{d['grid_nfe']} steps (weight 0 = plain replacement). `kde`: the exact kernel-density denoiser of "
             "the training digits without these, so they are new to it; `none`: the network, which saw them in "
             "training. The held-out digits above played no part.", "",
             "| model | sampler | " + " | ".join(f"w = {w:g}" for w in (0.0, *TUNE_WEIGHTS)) + " |",
             "|---|---|" + "---:|" * (1 + len(TUNE_WEIGHTS))]
    plain = [r for r in d["rows"] if r.get("method", "guided") in ("replace", "guided")]
    for model in dict.fromkeys(r["model"] for r in plain):
        for sampler in dict.fromkeys(r["sampler"] for r in plain):
            acc = {r["weight"]: r["accuracy"] for r in plain if r["model"] == model and r["sampler"] == sampler}
            lines.append(f"| {model} | {sampler} | " + " | ".join(_percent(acc, w) for w in (0.0, *TUNE_WEIGHTS))
                         + " |")
    resampled = [r for r in d["rows"] if r.get("method") == "guided_repaint"]
    if resampled:
        weights = list(dict.fromkeys(r["weight"] for r in resampled))
        lines += ["", f"guided_repaint (ddpm, j5 r4, {resampled[0]['nfe']} NFE) on the same digits:", "",
                  "| model | " + " | ".join(f"w = {w:g}" for w in weights) + " |", "|---|" + "---:|" * len(weights)]
        for model in dict.fromkeys(r["model"] for r in resampled):
            acc = {r["weight"]: r["accuracy"] for r in resampled if r["model"] == model}
            lines.append(f"| {model} | " + " | ".join(_percent(acc, w) for w in weights) + " |")
    lines.append("")
    return lines


def _pictures_section(picture_method: str) -> list[str]:
    """Links to the three pictures `pictures` draws."""
    lines = ["### Pictures", "",
             f"![one row per class, guidance {DEFAULT_GUIDANCE}](control_classes.png)", "",
             f"![held-out digits: original, known top half, six completions ({picture_method}, model `none`)]"
             "(control_inpaint.png)", "",
             f"![SDEdit of held-out digits at strength {', '.join(map(str, EDIT_STRENGTHS))}](control_edit.png)", ""]
    return lines


def cmd_report(args) -> None:
    """docs/control_results.md: the tables and pictures for the README's control section."""
    load = lambda name: json.loads((args.work / f"{name}.json").read_text())  # noqa: E731
    have = lambda name: (args.work / f"{name}.json").is_file()  # noqa: E731
    lines = [f"<!-- written by `python benchmarks/control.py report` on {time.strftime('%Y-%m-%d')}, {machine()} -->",
             "", USAGE]
    if have("mixture"):
        lines += _mixture_section(load("mixture"))
    if have("classes"):
        lines += _classes_section(load("classes"), load("train-label"))
    if have("complete"):
        lines += _complete_section(load("complete"), load("train-none"), load("ceiling")["rows"] if have("ceiling") else [])
    if have("tune-none"):
        lines += _tune_section(load("tune-none"))
    lines += _pictures_section(args.picture_method)
    (args.docs / "control_results.md").write_text("\n".join(lines))
    print("\n".join(lines))


STEPS = {"mixture": cmd_mixture, "train": cmd_train, "classes": cmd_classes, "tune": cmd_tune, "complete": cmd_complete,
         "ceiling": cmd_ceiling, "pictures": cmd_pictures, "report": cmd_report}


def smoke(args) -> None:
    """Every step at toy size: the mixtures' plain replacement on one observation, two 2-step digits networks of 8
    channels, 70 samples at NFE 4, plain replacement on 8 digits (in the pictures too), the pictures and the
    report, in a temporary folder."""
    with tempfile.TemporaryDirectory() as tmp:
        args.work = args.docs = Path(tmp)
        args.picture_method = "replace, ipndm"
        args.steps, args.channels, args.n, args.nfe, args.observations, args.limit, args.draws = 2, 8, 70, 4, 1, 8, 2
        for args.step, args.cond, args.only in [("mixture", "label", "replace NFE 20"), ("train", "label", ""),
                                                ("train", "none", ""), ("classes", "label", ""),
                                                ("tune", "none", "replace"), ("complete", "none", "replace, ipndm"),
                                                ("complete", "label", "replace, ipndm"),
                                                ("ceiling", "none", "replace, ipndm"), ("pictures", "none", ""),
                                                ("report", "none", "")]:
            STEPS[args.step](args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", nargs="?", choices=list(STEPS))
    p.add_argument("--work", type=Path, default=WORK)
    p.add_argument("--docs", type=Path, default=DOCS, help="pictures, report: where they are written")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the digits preset)")
    p.add_argument("--channels", type=int, default=None, help="train: network width (default: the digits preset)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cond", choices=["label", "none"], default="label", help="train: with labels or without")
    p.add_argument("--n", type=int, default=1000, help="samples per measurement")
    p.add_argument("--nfe", type=int, default=NFE, help="train (previews), classes, pictures: the sampler's NFE")
    p.add_argument("--observations", type=int, default=8, help="observed images per mixture")
    p.add_argument("--limit", type=int, default=None,
                   help="tune, complete, ceiling: only the first LIMIT digits (default: all 180)")
    p.add_argument("--only", default="",
                   help="mixture, tune, complete, ceiling: rerun only the runs whose name starts with this, keep the rest")
    p.add_argument("--picture", choices=["all", "classes", "inpaint", "edit"], default="all",
                   help="pictures: which one to redraw")
    p.add_argument("--picture-method", choices=list(INPAINT_METHODS), default=PICTURE_INPAINT,
                   help="pictures, report: the inpainting method the picture shows")
    p.add_argument("--draws", type=int, default=10, help="ceiling: exact conditional draws per held-out digit")
    p.add_argument("--smoke", action="store_true", help="every step at toy size in a temporary folder (CI)")
    args = p.parse_args()
    print(machine())
    if args.smoke:
        return smoke(args)
    if args.step is None:
        p.error(f"give a step ({', '.join(STEPS)}) or --smoke")
    STEPS[args.step](args)


if __name__ == "__main__":
    main()
