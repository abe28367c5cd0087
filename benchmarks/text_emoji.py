"""Emoji text-to-image (issue 12): prompt adherence, the guidance sweep, the README grid and sampling speed.

    python benchmarks/text_emoji.py sweep RUN                  # guidance 1/2/3/5 on docs/text_sweep_prompts.txt
    python benchmarks/text_emoji.py eval RUN --guidance W      # docs/text_eval_prompts.txt at W, 1 and prompt-free
    python benchmarks/text_emoji.py grid RUN --guidance W      # docs/text_grid.png (--png PATH) from text_grid_prompts.txt
    python benchmarks/text_emoji.py speed RUN --guidance W     # 64 prompted samples, the encoder's share
    python benchmarks/text_emoji.py layout RUN                 # the net's first guesses alone (no diffusion)

`--template "a picture of a {}"` (sweep, eval, layout) samples from each prompt written into the template and
scores it as the plain name: the model must not need the exact string.

Prompt files are fixed (see docs/text.md): the eval and sweep prompts are disjoint sets of training emoji's short
names drawn with a seeded permutation before any sample was seen. Sample i of every prompt uses seed i, so rows
differ only by their prompt. Results are merged into docs/text_results.json (one key per stage and setting; --results
names another file). `--smoke` trains a toy text model for 2 steps and runs every stage on 4 prompts of each file at
NFE 4, writing to a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

import unmix
from unmix.data.images import to_pil
from unmix.metrics.identity import emoji_identity, gaussian_blur
from unmix.metrics.prompts import format_adherence, normalize, prompt_adherence
from unmix.store.files import write_text

DOCS = Path(__file__).resolve().parent.parent / "docs"
RESULTS = DOCS / "text_results.json"


def read_lines(name: str, args) -> list[str]:
    """The prompts of docs/NAME (the first --limit of them)."""
    lines = [line.strip() for line in (DOCS / name).read_text(encoding="utf-8").splitlines() if line.strip()]
    return lines[:args.limit]


def record(args, key: str, value: dict) -> None:
    results = json.loads(args.results.read_text()) if args.results.is_file() else {}
    results[key] = value
    write_text(args.results, json.dumps(results, indent=1, sort_keys=True) + "\n")


def draw(model, prompts: list[str], k: int, guidance: float | None, nfe: int, sampler: str | None,
         prompt_free: bool = False, template: str = "{}") -> tuple[torch.Tensor, list[str], float]:
    """k samples per prompt (seeds 0..k-1 for every prompt, each prompt written into `template`), the prompt
    of each (as in the file), and the seconds it took."""
    each = [p for p in prompts for _ in range(k)]
    seeds = [i for _ in prompts for i in range(k)]
    asked = [template.format(p) for p in each]
    t = time.perf_counter()
    if prompt_free:  # the null caption: what the model draws when told nothing (the same k images for all prompts)
        x = model.sample(k, seeds=list(range(k)), nfe=nfe, sampler=sampler)
        x = x.repeat(len(prompts), 1, 1, 1)
    else:
        x = model.sample(len(each), seeds=seeds, nfe=nfe, sampler=sampler, prompts=asked, guidance=guidance)
    return x, each, time.perf_counter() - t


def pixel_neighbours(x: torch.Tensor, prompts: list[str]) -> dict:
    """A cross-check that learns nothing: is the named emoji among the 1 / 5 nearest training emoji in blurred
    pixels (Gaussian sigma 1, L2)? Only for prompts that are short names."""
    index = emoji_identity().index
    names = {normalize(n): k for k, n in enumerate(index.names)}
    rows = [i for i, p in enumerate(prompts) if normalize(p) in names]
    if not rows:
        return {}
    a = gaussian_blur(x[rows].float(), torch.ones(len(rows))).flatten(1)
    b = gaussian_blur(index.images, torch.ones(len(index))).flatten(1)
    near = torch.cdist(a, b).topk(5, dim=1, largest=False).indices
    want = torch.as_tensor([names[normalize(prompts[i])] for i in rows])
    return {"nn_top1": float((near[:, 0] == want).float().mean()),
            "nn_top5": float((near == want[:, None]).any(1).float().mean())}


def score(name: str, x: torch.Tensor, prompts: list[str], seconds: float, extra: dict) -> dict:
    m = prompt_adherence(x, prompts)
    m.update(pixel_neighbours(x, prompts))
    m.update(extra, seconds=round(seconds, 1))
    nn = f"; pixel-NN top-1 {m['nn_top1']:.1%}, top-5 {m['nn_top5']:.1%}" if "nn_top1" in m else ""
    print(f"{name}: " + "; ".join(format_adherence(m)) + nn + f" [{seconds:.0f} s]", flush=True)
    return m


def stage_sweep(model, args) -> None:
    prompts = read_lines("text_sweep_prompts.txt", args)
    for w in args.weights:
        x, each, s = draw(model, prompts, args.k, w, args.nfe, args.sampler, template=args.template)
        record(args, f"sweep/w{w:g}/nfe{args.nfe}{suffix(args)}",
               score(f"sweep w={w:g}", x, each, s, {"guidance": w, "k": args.k, "template": args.template}))


def stage_eval(model, args) -> None:
    prompts = read_lines("text_eval_prompts.txt", args)
    settings = [("guided", args.guidance, False), ("guidance1", 1.0, False), ("prompt_free", None, True)]
    for label, w, free in settings:
        if free and args.template != "{}":
            continue  # no prompt, no template
        x, each, s = draw(model, prompts, args.k, w, args.nfe, args.sampler, prompt_free=free, template=args.template)
        record(args, f"eval/{label}/nfe{args.nfe}{suffix(args)}", score(f"eval {label} (w={w})", x, each, s, {
            "guidance": w, "k": args.k, "prompts": len(prompts), "template": args.template}))


def stage_layout(model, args) -> None:
    """The text net's first guess of the picture (unmix.nets.layout) for each evaluation prompt, scored as a
    sample: what the U-Net is handed before any denoising."""
    layout = getattr(model.net, "layout", None)
    if layout is None:
        raise SystemExit(f"{args.run} has no layout (an older text model)")
    prompts = read_lines("text_eval_prompts.txt", args)
    with torch.no_grad():
        guess = layout(model.encode_prompts([args.template.format(p) for p in prompts], len(prompts)).pooled,
                       model.latent_shape[1:])
    with torch.no_grad():
        guess = model.encoder.decode(guess)
    record(args, f"layout/{type(layout).__name__}{suffix(args)}", score("layout alone", guess.clamp(-1, 1), prompts, 0.0,
                                                                  {"template": args.template}))


def suffix(args) -> str:
    return "" if args.template == "{}" else f"/template={args.template}"


def labelled_grid(x: torch.Tensor, prompts: list[str], k: int, scale: int = 3, label_width: int = 120) -> Image.Image:
    """One row per prompt: its text on the left, then its k samples."""
    side, pad = x.shape[-1] * scale, 2
    img = Image.new("RGB", (label_width + k * (side + pad) + pad, len(prompts) * (side + pad) + pad), "white")
    pen = ImageDraw.Draw(img)
    for r, p in enumerate(prompts):
        y = pad + r * (side + pad)
        pen.text((4, y + side // 2), p, fill=(0, 0, 0), anchor="lm")
        for c in range(k):
            img.paste(to_pil(x[r * k + c], scale), (label_width + pad + c * (side + pad), y))
    return img


def stage_grid(model, args) -> None:
    prompts = read_lines("text_grid_prompts.txt", args)
    x, each, s = draw(model, prompts, 4, args.guidance, args.nfe, args.sampler)
    labelled_grid(x, prompts, 4).save(args.png or DOCS / "text_grid.png")
    per_prompt = {}
    for i, p in enumerate(prompts):
        m = prompt_adherence(x[4 * i: 4 * i + 4], each[4 * i: 4 * i + 4])
        probs = emoji_identity().probs(x[4 * i: 4 * i + 4])
        names = emoji_identity().index.names
        per_prompt[p] = {k: v for k, v in m.items() if v is not None and k not in ("n",)}
        per_prompt[p]["classified_as"] = [names[j] for j in probs.argmax(1).tolist()]
    record(args, f"grid/{Path(args.run).name}/w{args.guidance:g}/nfe{args.nfe}",
           {"guidance": args.guidance, "seconds": round(s, 1), "per_prompt": per_prompt})
    for p, m in per_prompt.items():
        print(f"{p:>16s}: {m['classified_as']}")


def stage_speed(model, args) -> None:
    """64 prompted samples (16 grid prompts x 4) with the recommended settings; the text encoder's time (loading
    once, then encoding the prompts and the null caption) next to the whole call's, in one process."""
    prompts = read_lines("text_grid_prompts.txt", args)[:16]
    each = [p for p in prompts for _ in range(4)]
    t = time.perf_counter()
    encoder = model.text_encoder()
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(args.repeats):
        model.encode_prompts(each, len(each))
        encoder.encode([""])
    encode_s = (time.perf_counter() - t) / args.repeats
    t = time.perf_counter()
    model.sample(len(each), seeds=[i for _ in prompts for i in range(4)], prompts=each, guidance=args.guidance,
                 nfe=args.nfe, sampler=args.sampler)
    total_s = time.perf_counter() - t
    m = {"n": len(each), "guidance": args.guidance, "nfe": args.nfe, "sampler": args.sampler or model.sampling.get(
        "sampler", "default"), "threads": torch.get_num_threads(), "encoder_load_s": round(load_s, 2),
         "encode_s": round(encode_s, 3), "sample_s": round(total_s, 1), "encoder_share": round(encode_s / total_s, 4)}
    record(args, f"speed/w{args.guidance:g}/nfe{args.nfe}", m)
    print(json.dumps(m))


STAGES = {"sweep": stage_sweep, "eval": stage_eval, "grid": stage_grid, "speed": stage_speed, "layout": stage_layout}


def smoke(args) -> None:
    """A text model of 16 channels trained for 2 steps, then every stage on 4 prompts per file at NFE 4, with the
    grid and the results in a temporary folder; skipped without the emoji pictures."""
    from unmix.data import load_dataset
    from unmix.errors import UnmixError

    try:
        load_dataset("emoji")
    except UnmixError as e:
        return print(f"smoke skipped: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        args.run, args.results, args.png = f"{tmp}/run", Path(tmp) / "text_results.json", f"{tmp}/text_grid.png"
        args.limit, args.nfe, args.k, args.weights, args.repeats = 4, 4, 1, [1.0, 3.0], 1
        model = unmix.train("emoji", out=args.run, cond="text", steps=2, net={"channels": 16}, nfe=4, threads=1,
                            progress=False)
        for stage in STAGES.values():
            stage(model, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", nargs="?", choices=list(STAGES))
    ap.add_argument("run", nargs="?")
    ap.add_argument("--guidance", type=float, default=None, help="default: unmix.guidance.DEFAULT_TEXT_GUIDANCE")
    ap.add_argument("--weights", type=float, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--k", type=int, default=2, help="samples per prompt (sweep, eval)")
    ap.add_argument("--nfe", type=int, default=32)
    ap.add_argument("--sampler", default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--png", default=None, help="grid: where the picture goes (default docs/text_grid.png)")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the JSON the results are merged into")
    ap.add_argument("--limit", type=int, default=None, help="only the first LIMIT prompts of each prompt file")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--template", default="{}", help='how each prompt is written, e.g. "a picture of a {}"')
    ap.add_argument("--smoke", action="store_true", help="every stage on a toy model in a temporary folder (CI)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.guidance is None:
        from unmix.guidance import DEFAULT_TEXT_GUIDANCE

        args.guidance = DEFAULT_TEXT_GUIDANCE
    if args.smoke:
        return smoke(args)
    if args.stage is None or args.run is None:
        ap.error(f"give a stage ({', '.join(STAGES)}) and a run folder, or --smoke")
    STAGES[args.stage](unmix.load(args.run), args)


if __name__ == "__main__":
    main()
