"""`unmix sample`, `unmix noise` and `unmix info`: generate from a checkpoint, show the forward process, describe a checkpoint."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
import typer
from tqdm import tqdm

from unmix.cli.app import app
from unmix.errors import UnmixError


def _seed_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UnmixError(f"--seeds takes comma-separated integers, e.g. 3,7,42; got {text!r}") from None


def _labels(text: str | None):
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    return parts[0] if len(parts) == 1 else parts


@app.command()
def sample(
    checkpoint: str = typer.Argument(None, help="A checkpoint folder, or a training output folder (its latest checkpoint)"),
    n: int = typer.Option(64, help="Number of samples"),
    seed: int = typer.Option(0, help="Sample i uses seed + i"),
    seeds: str = typer.Option(None, help="Explicit comma-separated seeds, one per sample (overrides --n and --seed)"),
    sampler: str = typer.Option(None, help="Sampler name (see `unmix sample --list-samplers`)"),
    nfe: int = typer.Option(32, help="Network evaluations per sample"),
    out: str = typer.Option("samples", help="Folder for grid.png and one PNG per sample"),
    label: str = typer.Option(None, help="Class label(s) for a class-conditional model: one for all, or one per sample"),
    guidance: float = typer.Option(None, help="Classifier-free guidance scale with --label (default 1.5; 1 = none)"),
    save_npy: str = typer.Option(None, help="Also save the raw samples (float32, [-1, 1], NCHW) to this .npy file"),
    gif: str = typer.Option(None, help="Also save a GIF of the reverse process (x_sigma | x0_hat) to this file"),
    nrow: int = typer.Option(None, help="Images per grid row (default: about square)"),
    singles: bool = typer.Option(True, "--singles/--no-singles", help="Write one PNG per sample"),
    weights: str = typer.Option("ema", help="ema (default) or model (the raw, non-averaged weights)"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    batch_size: int = typer.Option(256, help="Samples per network batch"),
    threads: int = typer.Option(None, help="CPU threads (default: PyTorch's choice)"),
    list_samplers: bool = typer.Option(False, "--list-samplers", help="List the samplers and exit"),
):
    """Generate samples from a trained model: a PNG grid, single PNGs, optionally raw .npy and a GIF."""
    from unmix import samplers
    from unmix.api import load
    from unmix.data.images import render_batch, to_pil

    if list_samplers:
        for name, spec in samplers.SAMPLERS.items():
            print(f"{name:16s} {spec.summary}")
        return
    if checkpoint is None:
        raise UnmixError("give a checkpoint folder or a training output folder, e.g. `unmix sample runs/digits`")
    seed_list = _seed_list(seeds)
    if seed_list is not None:
        n = len(seed_list)
    if n < 1 or nfe < 1 or batch_size < 1 or (threads is not None and threads < 1):
        raise UnmixError("--n, --nfe, --batch-size and --threads must be >= 1")
    if threads:
        torch.set_num_threads(threads)
    samplers.get_sampler(sampler or samplers.DEFAULT_SAMPLER)
    dev = "cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device)
    model = load(checkpoint, weights=weights, device=dev)
    labels = model.labels_for(_labels(label), n)
    recorder = _Recorder() if gif else None
    bar = tqdm(total=math.ceil(n / batch_size) * nfe, desc="sample", unit="eval", leave=False, dynamic_ncols=True)

    def callback(*args):
        bar.update(1)
        if recorder is not None:
            recorder(*args)

    with bar:
        x = model.sample(n, seed=seed, seeds=seed_list, sampler=sampler, nfe=nfe, labels=labels, guidance=guidance,
                         batch_size=batch_size, callback=callback)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    is_image = x.ndim == 4
    grid_path = folder / ("grid.png" if is_image else "scatter.png")
    render_batch(x, nrow).save(grid_path)
    written = [str(grid_path)]
    if singles and is_image:
        used = seed_list or list(range(seed, seed + n))
        for i, (img, s) in enumerate(zip(x, used)):
            to_pil(img).save(folder / f"{i:04d}_seed{s}.png")
        written.append(f"{n} single PNGs in {folder}/")
    if save_npy:
        Path(save_npy).parent.mkdir(parents=True, exist_ok=True)
        np.save(save_npy, x.numpy().astype(np.float32))
        written.append(str(save_npy))
    if gif:
        recorder.save(gif, x, nrow)
        written.append(str(gif))
    print(f"{n} samples from {model.checkpoint} ({sampler or samplers.DEFAULT_SAMPLER}, {nfe} NFE): "
          + ", ".join(written), file=sys.stderr)


class _Recorder:
    """Collects (x_sigma, x0_hat) at every denoiser call, across batches, for the reverse-process GIF."""

    def __init__(self):
        self.steps: dict[int, list] = {}

    def __call__(self, step, sigma, x, x0_hat):
        from unmix.forward import vp_view

        self.steps.setdefault(step, []).append((vp_view(x, float(sigma)).float().cpu(), x0_hat.float().cpu()))

    def save(self, path: str, final: torch.Tensor, nrow: int | None, limit: int = 64) -> None:
        from unmix.data.images import render_batch, save_gif

        frames = []
        for step in sorted(self.steps):
            xs = torch.cat([a for a, _ in self.steps[step]])[:limit]
            x0 = torch.cat([b for _, b in self.steps[step]])[:limit].clamp(-1, 1)
            frames.append(_side_by_side(render_batch(xs, nrow), render_batch(x0, nrow)))
        last = render_batch(final[:limit], nrow)
        frames.append(_side_by_side(last, last))
        save_gif(frames, path)


def _side_by_side(a, b, gap: int = 8):
    from PIL import Image

    img = Image.new("RGB", (a.width + b.width + gap, max(a.height, b.height)), "white")
    img.paste(a.convert("RGB"), (0, 0))
    img.paste(b.convert("RGB"), (a.width + gap, 0))
    return img


@app.command()
def noise(
    image: str = typer.Option(None, help="An image file to noise (otherwise an item of --data)"),
    data: str = typer.Option("digits", help="Dataset to take an item from when no --image is given"),
    index: int = typer.Option(0, help="Which dataset item"),
    size: int = typer.Option(64, help="Resize and centre-crop --image to this side"),
    frames: int = typer.Option(10, help="Frames in the strip (noise levels from 0 to --sigma-max)"),
    sigma_max: float = typer.Option(20.0, help="Largest noise level"),
    seed: int = typer.Option(0, help="Seed of the noise path"),
    out: str = typer.Option("noise", help="Folder for strip.png and noise.gif"),
    gif: str = typer.Option(None, help="GIF path (default OUT/noise.gif)"),
):
    """The forward process on one image: noise spreading like ink in water, as a frame strip and a GIF."""
    from unmix.data import load_dataset
    from unmix.data.images import pil_to_array, read_image, render_batch, resize_crop, save_gif, scatter
    from unmix.forward import trajectory, vp_view

    if frames < 2 or sigma_max <= 0 or size < 1:
        raise UnmixError("--frames must be >= 2, and --sigma-max and --size positive")
    if image:
        img = read_image(image)
        if min(img.size) < size:
            raise UnmixError(f"image {image} is {img.width}x{img.height}, smaller than --size {size}; "
                             f"pass a smaller --size")
        x0 = torch.from_numpy(pil_to_array(resize_crop(img, size))).float()[None] / 127.5 - 1
    else:
        ds = load_dataset(data)
        if ds.is_image:
            if not 0 <= index < len(ds):
                raise UnmixError(f"--index {index} out of range: {data} has {len(ds)} items")
            x0 = ds.batch(torch.tensor([index]))[0]
        else:
            x0 = ds.batch(torch.arange(min(len(ds), 2000)))[0]
    sigmas = [0.0] + torch.logspace(math.log10(0.05), math.log10(sigma_max), frames - 1).tolist()
    path = trajectory(x0, sigmas, torch.Generator().manual_seed(seed))
    views = [vp_view(path[k], s) for k, s in enumerate(sigmas)]
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    if x0.ndim == 4:
        strip = render_batch(torch.cat(views), nrow=frames)
    else:
        strip = _row([scatter(v, size=240) for v in views])
    strip.save(folder / "strip.png")
    gif_path = gif or str(folder / "noise.gif")
    dense = [0.0] + torch.logspace(math.log10(0.02), math.log10(sigma_max), 47).tolist()
    dense_path = trajectory(x0, dense, torch.Generator().manual_seed(seed))
    save_gif([render_batch(vp_view(dense_path[k], s)) for k, s in enumerate(dense)], gif_path)
    print(f"forward process at sigma = {', '.join(f'{s:.3g}' for s in sigmas)}: {folder / 'strip.png'}, {gif_path}",
          file=sys.stderr)


def _row(tiles):
    from PIL import Image

    w, h = tiles[0].size
    img = Image.new("RGB", (len(tiles) * w, h), "white")
    for i, t in enumerate(tiles):
        img.paste(t.convert("RGB"), (i * w, 0))
    return img


@app.command()
def info(
    checkpoint: str = typer.Argument(..., help="A checkpoint folder or a training output folder"),
    as_json: bool = typer.Option(False, "--json", help="Print the checkpoint's config.json"),
):
    """What a checkpoint holds: network, recipe, data, training progress."""
    from unmix import checkpoint as ckpt
    from unmix.nets import build_net

    c = ckpt.open_checkpoint(checkpoint)
    if as_json:
        print(json.dumps(c.config, indent=2))
        return
    cfg = c.config
    net = build_net(cfg["net"])
    params = sum(p.numel() for p in net.parameters())
    data, recipe, tr = cfg.get("data", {}), cfg["recipe"], cfg.get("train", {})
    files = sorted(p.name for p in c.path.iterdir())
    lines = [
        f"checkpoint   {c.path}",
        f"step         {c.step} ({cfg.get('images_seen', 0) / 1000:.1f}k images)",
        f"network      {cfg['net']['kind']}, {params / 1e6:.2f}M parameters, "
        + ", ".join(f"{k}={v}" for k, v in cfg["net"].items() if k != "kind"),
        f"recipe       {recipe['name']} ({recipe['parameterization']}"
        + (f", {recipe['schedule']} schedule" if recipe.get("schedule") else f", sigma_data {recipe['sigma_data']}")
        + (f", min-SNR {recipe['min_snr_gamma']}" if recipe.get("min_snr_gamma") else "") + ")",
        f"data         {data.get('name')} ({data.get('size')} items of shape {data.get('shape')})",
    ]
    if cfg["net"].get("num_classes"):
        lines.append(f"classes      {', '.join(data.get('class_names', []))} (conditional, label dropout "
                     f"{tr.get('label_dropout')})")
    if tr:
        lines.append(f"training     batch {tr.get('batch_size')}, lr {tr.get('lr')}, EMA half-life "
                     f"{tr.get('ema_halflife_kimg')}k images, seed {tr.get('seed')}")
    lines.append(f"files        {', '.join(files)}")
    run = c.path.parent
    others = ckpt.list_checkpoints(run)
    if len(others) > 1:
        lines.append(f"in run       {', '.join(p.name for p in others)}")
    stats = run / "stats.jsonl"
    if stats.is_file():
        last = [line for line in stats.read_text().splitlines() if line.strip()]
        if last:
            rec = json.loads(last[-1])
            lines.append(f"last log     step {rec.get('step')}, loss {rec.get('loss', float('nan')):.4f}, "
                         f"{rec.get('seconds', 0) / 60:.1f} min")
    print("\n".join(lines))
