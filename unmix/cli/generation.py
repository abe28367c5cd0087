"""What `unmix sample` adds for Stable Diffusion models and for provenance: --lora, the records written into every
single PNG (unmix.adapters.png_params), and --from-png, which redraws such a PNG bit for bit."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import typer

from unmix.adapters.lora import apply_loras
from unmix.adapters.png_params import image_records, png_texts, read_record
from unmix.cli.outputs import check_file_path, fresh_folder, run_folder, save_npy, write_samples
from unmix.data.images import auto_scale
from unmix.distributed import pick_device
from unmix.errors import UnmixError
from unmix.guidance import DEFAULT_GUIDANCE, DEFAULT_TEXT_GUIDANCE
from unmix.model import load
from unmix.sampler_names import named_sampler
from unmix.samplers import get_sampler


def lora_option():
    return typer.Option(None, "--lora", help="A LoRA .safetensors (diffusers/PEFT or kohya) merged into a Stable "
                        "Diffusion model's UNet and text encoder: FILE or FILE:SCALE (scale 1 by default); repeatable.")


def from_png_option():
    return typer.Option(None, "--from-png", help="Redraw a PNG that unmix sample wrote, bit for bit on the same "
                        "machine, from the record it carries (model, prompts, sampler, NFE, seeds, LoRAs); MODEL, if "
                        "given, replaces the recorded model's path.")


def merge_loras(model, specs: list[str] | None) -> list[dict]:
    """Merge --lora FILE[:SCALE] files into the model, in order; what was merged (path, name, scale, sha256)."""
    if not specs:
        return []
    loras = apply_loras(model, specs).loras
    for lo in loras:
        lo["path"] = str(Path(lo["path"]).resolve())
    return loras


def png_records(model, x: torch.Tensor, sampler: str, nfe: int, seeds: list[int], batch_size: int, weights: str,
                loras: list[dict], scale: int | None, prompts=None, negative_prompt=None, guidance=None,
                labels=None) -> list[dict] | None:
    """Each single PNG's text chunks for a draw (None for points, which get no single PNGs)."""
    if x.ndim != 4:
        return None
    _, grid = named_sampler(sampler, model.recipe, nfe)
    steps = len(grid["sigmas"]) - 1 if grid else get_sampler(sampler).steps_for(nfe)
    cfg = guidance if guidance is not None else DEFAULT_TEXT_GUIDANCE if prompts is not None else \
        DEFAULT_GUIDANCE if labels is not None else None
    base = {"model": str(Path(model.checkpoint).resolve()), "model_name": Path(model.checkpoint).name,
            "model_hash": model.data.get("sha256"), "weights": weights, "device": str(model.device),
            "threads": torch.get_num_threads(), "sampler": sampler, "nfe": nfe, "steps": steps, "guidance": guidance,
            "cfg_scale": cfg, "negative_prompt": negative_prompt, "loras": loras, "size": list(x.shape[-2:]),
            "png_scale": scale or auto_scale(x.shape[-2])}
    labels = None if labels is None else labels.tolist()
    return [png_texts(r) for r in image_records(base, seeds, batch_size, prompts, labels)]


def redraw(png: Path, checkpoint: str | None, out: str | None, save_npy_path: str | None, device: str | None) -> None:
    """`unmix sample --from-png PNG`: the recorded batch drawn again, its image written with the same record."""
    record = read_record(png)
    torch.set_num_threads(int(record.get("threads") or torch.get_num_threads()))
    model = load(checkpoint or record["model"], weights=record["weights"], device=pick_device(device or record["device"]))
    loras = merge_loras(model, [f"{lo['path']}:{lo['scale']}" for lo in record["loras"]])
    for was, now in zip(record["loras"], loras):
        if was["sha256"] != now["sha256"]:
            raise UnmixError(f"the LoRA {now['path']} has changed since {png} was drawn (its sha256 differs)")
    folder = fresh_folder(out, run_folder(model.checkpoint))
    npy = check_file_path(save_npy_path, ".npy", folder)
    solver, grid = named_sampler(record["sampler"], model.recipe, record["nfe"])
    batch, i = record["batch"], record["index"]
    labels = model.labels_for(record["labels"], len(batch)) if record.get("labels") is not None else None
    x = model.sample(len(batch), seeds=batch, sampler=solver, nfe=record["nfe"], batch_size=len(batch), labels=labels,
                     guidance=record["guidance"], prompts=record["batch_prompts"],
                     negative_prompt=record["negative_prompt"], **grid)[i:i + 1]
    written = write_samples(folder, x, [record["seed"]], scale=record["png_scale"], texts=[png_texts(record)])
    if npy:
        written.append(save_npy(npy, x))
    print(f"redrew {png} (seed {record['seed']}, {record['sampler']}, {record['nfe']} NFE): " + ", ".join(written),
          file=sys.stderr)
