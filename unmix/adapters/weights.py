"""The weight files of a foreign model folder, read with safetensors only: one file, shards named by an index, or an
fp16 / bf16 variant; pickle files are refused, because unpickling a file can run code."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from unmix.errors import UnmixError

WEIGHTS_NAME = "diffusion_pytorch_model"
VARIANTS = (None, "fp16", "bf16")  # preference order when a folder holds several
PICKLES = (".bin", ".pt", ".pth", ".ckpt")  # weight files unmix refuses to read
_OLD_ATTENTION_KEYS = {".query.": ".to_q.", ".key.": ".to_k.", ".value.": ".to_v.", ".proj_attn.": ".to_out.0."}


def read_json(path: Path) -> dict:
    """A foreign folder's JSON object; an unreadable or non-object file is one clear error."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnmixError(f"{path} is not readable JSON ({e})") from None
    if not isinstance(obj, dict):
        raise UnmixError(f"{path} does not hold a JSON object")
    return obj


def weight_files(folder: Path, stem: str = WEIGHTS_NAME) -> list[Path]:
    """The safetensors files of a model folder: STEM.safetensors, a sharded index, or an fp16 / bf16 variant."""
    for variant in VARIANTS:
        suffix = f".{variant}" if variant else ""
        single = folder / f"{stem}{suffix}.safetensors"
        if single.is_file():
            return [single]
        for index in (folder / f"{stem}.safetensors.index{suffix}.json", folder / f"{stem}{suffix}.safetensors.index.json"):
            if index.is_file():
                shards = sorted(set(read_json(index).get("weight_map", {}).values()))
                missing = [s for s in shards if not (folder / s).is_file()]
                if not shards or missing:
                    raise UnmixError(f"{index} names shards that are missing: {', '.join(missing) or 'none listed'}")
                return [folder / s for s in shards]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLES) if folder.is_dir() else []
    if pickles:
        raise UnmixError(f"{folder} holds only pickle weights ({', '.join(pickles)}) and unmix never unpickles files "
                         "(they can run code); convert them once with diffusers' save_pretrained(..., "
                         f"safe_serialization=True) to get {stem}.safetensors")
    raise UnmixError(f"{folder} has no {stem}.safetensors (nor a sharded index or an fp16 variant)")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a diffusers model folder, in float32, read into memory (never mapped, never unpickled)."""
    state = {}
    for f in weight_files(folder):
        try:
            tensors = load_safetensors(f.read_bytes())
        except (SafetensorError, OSError, ValueError) as e:
            raise UnmixError(f"{f} is not a readable safetensors file ({e})") from None
        state.update(tensors)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    for old, new in _OLD_ATTENTION_KEYS.items():  # attention names of diffusers < 0.14
        state = {k.replace(old, new): v for k, v in state.items()}
    return state
