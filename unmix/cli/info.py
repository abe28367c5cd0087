"""What a checkpoint holds and whether it still works: `unmix info`'s report, built on the model layer.

It sits above unmix.model (it loads the checkpoint and runs one denoiser call), so unmix.store.checkpoint stays a
module about files alone.
"""
from __future__ import annotations

import json
import os

import torch

from unmix.adapters.diffusers_folder import describe_folder, is_diffusers_folder
from unmix.conditioning import NULL_CAPTION
from unmix.errors import UnmixError
from unmix.model import load
from unmix.store.checkpoint import Checkpoint, list_checkpoints, open_checkpoint, verify_weights


def verify(c: Checkpoint) -> list[str]:
    """Problems that would stop the checkpoint from sampling: unreadable weight files, or a config.json whose
    network cannot be rebuilt, take the stored weights, or denoise one item (checked by doing exactly that)."""
    problems = verify_weights(c)
    if problems:
        return problems
    try:
        model = load(c.path)
        x = torch.zeros(1, *model.latent_shape)
        cond = model.encode_prompts(NULL_CAPTION, 1) if model.is_text else None  # a text net needs a caption
        with torch.no_grad():
            model.denoiser(x, torch.ones(1), cond)
    except UnmixError as e:
        return [str(e)]
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as e:  # a health check names any failure
        return [f"{c.path}/config.json does not give a working network ({type(e).__name__}: {e})"]
    return []


def describe(path: str | os.PathLike) -> list[str]:
    """What a checkpoint holds, as lines for `unmix info`: network, recipe, data, training progress, health."""
    if is_diffusers_folder(path):
        return describe_diffusers(path)
    c = open_checkpoint(path)
    cfg = c.config
    data, recipe, tr = cfg.get("data") or {}, cfg["recipe"], cfg.get("train") or {}
    lines = [
        f"checkpoint   {c.path}",
        f"step         {c.step} ({cfg.get('images_seen', 0) / 1000:.1f}k images)",
        f"network      {cfg['net'].get('kind')}, "
        + ", ".join(f"{k}={v}" for k, v in cfg["net"].items() if k != "kind"),
        f"recipe       {recipe.get('name')} ({recipe.get('parameterization')}"
        + (f", {recipe['schedule']} schedule" if recipe.get("schedule") else f", sigma_data {recipe.get('sigma_data')}")
        + (f", min-SNR {recipe['min_snr_gamma']}" if recipe.get("min_snr_gamma") else "") + ")",
        f"data         {data.get('name')} ({data.get('size')} items of shape {data.get('shape')})",
    ]
    if cfg["net"].get("num_classes"):
        lines.append(f"classes      {', '.join(map(str, data.get('class_names', [])))} (conditional, label dropout "
                     f"{tr.get('label_dropout')})")
    if cfg["net"].get("neighbours") or cfg["net"].get("layout") == "retrieval":
        lines.append(f"privacy      holds its {data.get('size')} training items (the net's retrieval table): sharing "
                     "the checkpoint shares them")
    if cfg["net"].get("neighbours_patch"):
        lines.append(f"guess        local: each pixel follows the training pictures whose patch around it matches "
                     f"(patch side {cfg['net']['neighbours_patch']:g} x sigma pixels, the net corrects the guess)")
    if cfg["net"].get("neighbours") and not cfg["net"].get("neighbours_leave_out"):
        lines.append("copying      reproduces its training set (--reproduce-training-set, neighbours leave-out 0): "
                     "its guess always held the picture being denoised, so it learnt to return the nearest training "
                     "picture; train without that flag for new pictures")
    if tr:
        lines.append(f"training     batch {tr.get('batch_size')}, lr {tr.get('lr')}, EMA half-life "
                     f"{tr.get('ema_halflife_kimg')}k images, seed {tr.get('seed')}")
    lines.append(f"files        {', '.join(sorted(p.name for p in c.path.iterdir()))}")
    others = list_checkpoints(c.path.parent)
    if len(others) > 1:
        lines.append(f"in run       {', '.join(p.name for p in others)}")
    stats = c.path.parent / "stats.jsonl"
    last = [line for line in stats.read_text().splitlines() if line.strip()] if stats.is_file() else []
    if last:
        try:
            rec = json.loads(last[-1])
            lines.append(f"last log     step {rec.get('step')}, loss {rec.get('loss', float('nan')):.4f}, "
                         f"{rec.get('seconds', 0) / 60:.1f} min")
        except (ValueError, TypeError):
            lines.append("last log     unreadable (stats.jsonl's last line is damaged)")
    problems = verify(c)
    lines.append("health       " + ("weights readable, network runs" if not problems
                                    else "DAMAGED: " + "; ".join(problems)))
    return lines


def describe_diffusers(path: str | os.PathLike) -> list[str]:
    """`unmix info` for a diffusers folder: what unmix reads from it, and whether the network runs."""
    lines, schedule = describe_folder(path)
    try:  # a bare UNet without a scheduler: check the network on the default schedule
        model = load(path, schedule=None if schedule else {})
        with torch.no_grad():
            model.denoiser(torch.zeros(1, *model.shape), torch.ones(1))
        problems = []
    except UnmixError as e:
        problems = [str(e)]
    except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as e:
        problems = [f"{path} does not give a working network ({type(e).__name__}: {e})"]
    return [*lines, "health       " + ("weights readable, network runs" if not problems else "DAMAGED: " + "; ".join(problems))]
