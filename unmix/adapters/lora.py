"""LoRA files merged into a Stable Diffusion model's weights, and taken out again bit for bit.

    merged = apply_loras(model, [("style.safetensors", 0.8)])   # W <- W + 0.8 x (alpha / rank) x up @ down
    merged.unload()                                              # the original weights, exactly

A LoRA (Hu et al. 2021) stores, for some linear or convolution layers of the UNet and the CLIP text encoder, a
low-rank update up @ down; merging it at `scale` is what diffusers' `load_lora_weights` + `fuse_lora(lora_scale=)`
computes (tests/test_sd_lora.py). The formats read, with safetensors only (a pickle is refused, never unpickled):

    diffusers / PEFT   unet.<module>.lora_A.weight / .lora_B.weight, text_encoder.<module>...; alpha from the file's
                       lora_adapter_metadata (lora_alpha, alpha_pattern) when it has one, else alpha = rank (scale 1),
                       as diffusers does
    older diffusers    unet.<module>.lora.down.weight / .lora.up.weight (and .alpha)
    kohya (sd-scripts) lora_unet_<module, dots as _>.lora_down.weight / .lora_up.weight / .alpha, lora_te_<...>

A file whose keys, layers or shapes do not fit the model is one error line naming the first that does not.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as load_safetensors
from torch import nn

from unmix.adapters.weights import PICKLES
from unmix.errors import UnmixError

PARTS = {"unet": "unet", "text_encoder": "text_encoder", "lora_unet": "unet", "lora_te": "text_encoder"}
_KEY = re.compile(r"^(?:(unet|text_encoder)\.)?(.+?)\.(lora_A|lora_B|lora\.down|lora\.up)\.weight$")
_KOHYA = re.compile(r"^(lora_unet|lora_te)_(.+?)\.(lora_down\.weight|lora_up\.weight|alpha)$")
_ALPHA = re.compile(r"^(?:(unet|text_encoder)\.)?(.+?)\.alpha$")
_ROLE = {"lora_A": "down", "lora.down": "down", "lora_B": "up", "lora.up": "up", "lora_down.weight": "down",
         "lora_up.weight": "up", "alpha": "alpha"}


def parse_lora(text: str) -> tuple[Path, float]:
    """FILE or FILE:SCALE (the scale defaults to 1) as (path, scale)."""
    path, sep, tail = str(text).rpartition(":")
    if sep:
        try:
            return Path(path), float(tail)
        except ValueError:
            pass
    return Path(text), 1.0


def read_lora(path) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(tensors, adapter metadata, sha256) of a LoRA .safetensors file."""
    path = Path(path).expanduser()
    if path.suffix in PICKLES:
        raise UnmixError(f"{path} is a pickle ({path.suffix}) and unmix never unpickles files (they can run code); "
                         "use the LoRA's .safetensors file")
    if not path.is_file():
        raise UnmixError(f"LoRA file {path} does not exist")
    try:
        raw = path.read_bytes()
        tensors = load_safetensors(raw)
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        adapter = json.loads(meta.get("lora_adapter_metadata") or "{}")
    except (SafetensorError, OSError, ValueError) as e:
        raise UnmixError(f"{path} is not a readable safetensors file ({e}); a LoRA is read from .safetensors only") from None
    return {k: v.float() for k, v in tensors.items()}, adapter, hashlib.sha256(raw).hexdigest()


@dataclass
class _Layer:
    part: str
    name: str
    kohya: bool  # the name has its dots written as underscores
    down: torch.Tensor | None = None
    up: torch.Tensor | None = None
    alpha: float | None = None


def _parse_key(key: str, where) -> tuple[str, str, str, bool]:
    """(part, layer name, role down / up / alpha, kohya naming) of one key of a LoRA file."""
    m = _KOHYA.match(key)
    if m:
        return PARTS[m.group(1)], m.group(2), _ROLE[m.group(3)], True
    m = _KEY.match(key) or _ALPHA.match(key)
    if m is None:
        raise UnmixError(f"{where}: {key!r} is not a LoRA key unmix reads (diffusers/PEFT .lora_A/.lora_B, "
                         "kohya lora_unet_*.lora_down/.lora_up); is this a LoRA file?")
    return PARTS[m.group(1) or "unet"], m.group(2), _ROLE[m.group(3)] if m.re is _KEY else "alpha", False


def lora_layers(tensors: dict, metadata: dict, where) -> list[_Layer]:
    """The layers a LoRA file updates, each with its down, up and alpha."""
    layers: dict[tuple[str, str], _Layer] = {}
    for key, value in tensors.items():
        part, name, role, kohya = _parse_key(key, where)
        layer = layers.setdefault((part, name), _Layer(part, name, kohya))
        if role == "alpha":
            layer.alpha = float(value)
        else:
            setattr(layer, role, value)
    if not layers:
        raise UnmixError(f"{where} holds no tensors; it is not a LoRA file")
    for layer in layers.values():
        if layer.down is None or layer.up is None:
            raise UnmixError(f"{where}: the LoRA for {layer.part} {layer.name} lacks its "
                             f"{'down (lora_A)' if layer.down is None else 'up (lora_B)'} weight; the file is damaged")
        if layer.alpha is None:
            layer.alpha = _metadata_alpha(metadata, layer)
    return list(layers.values())


def _metadata_alpha(metadata: dict, layer: _Layer) -> float:
    """PEFT's alpha for a layer from diffusers' lora_adapter_metadata (alpha_pattern, else lora_alpha), else rank."""
    patterns = metadata.get(f"{layer.part}.alpha_pattern") or {}
    for pattern, alpha in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", layer.name):
            return float(alpha)
    alpha = metadata.get(f"{layer.part}.lora_alpha")
    return float(alpha) if alpha is not None else float(layer.down.shape[0])


def delta(layer: _Layer, scale: float) -> torch.Tensor:
    """scale x (alpha / rank) x up @ down, in the shape of the layer's weight (linear, or convolution)."""
    rank = layer.down.shape[0]
    up, down = layer.up.flatten(1), layer.down.flatten(1)
    return ((up @ down) * (scale * layer.alpha / rank)).reshape(layer.up.shape[0], *layer.down.shape[1:])


def _modules(root: nn.Module, kohya: bool) -> dict[str, nn.Module]:
    """The root's layers by name (kohya's: dots as underscores). A CLIP text model of transformers >= 5 lacks the
    text_model level that LoRA files name, so its layers answer to both names."""
    named = dict(root.named_modules())
    if type(root).__name__ == "CLIPTextModel" and not hasattr(root, "text_model"):
        named.update({f"text_model.{k}": v for k, v in list(named.items()) if k})
    return {k.replace(".", "_"): v for k, v in named.items()} if kohya else named


@dataclass
class MergedLoRA:
    """LoRAs merged into a model: what they were (path, scale, sha256) and the weights they replaced."""

    loras: list[dict] = field(default_factory=list)
    _original: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, repr=False)

    def unload(self) -> None:
        """Put back the weights as they were before the first LoRA, bit for bit."""
        with torch.no_grad():
            for weight, original in self._original.values():
                weight.copy_(original)
        self._original.clear()
        self.loras.clear()


def apply_loras(model, loras, merged: MergedLoRA | None = None) -> MergedLoRA:
    """Merge LoRA files [(path, scale), ...] (or "FILE:SCALE" strings) into a Stable Diffusion Model's UNet and text
    encoder, in order; returns what `unload` takes out again."""
    roots = _roots(model)
    merged = merged or MergedLoRA()
    for item in loras:
        path, scale = parse_lora(item) if isinstance(item, str) else (Path(item[0]), float(item[1]))
        tensors, metadata, digest = read_lora(path)
        updates, modules = [], {}
        for layer in lora_layers(tensors, metadata, path):
            if (layer.part, layer.kohya) not in modules:
                modules[layer.part, layer.kohya] = _modules(roots[layer.part], layer.kohya)
            weight = getattr(modules[layer.part, layer.kohya].get(layer.name), "weight", None)
            if weight is None:
                raise UnmixError(f"{path}: the LoRA changes {layer.part} layer {layer.name}, which this model does not "
                                 "have; it was made for another model (e.g. SDXL, or SD 2 for SD 1)")
            change = delta(layer, scale)
            if change.shape != weight.shape:
                raise UnmixError(f"{path}: the LoRA for {layer.part} {layer.name} is {list(change.shape)}, the model's "
                                 f"layer is {list(weight.shape)}; it was made for another model")
            updates.append((weight, change))
        with torch.no_grad():  # every layer checked first: a bad file changes nothing
            for weight, change in updates:
                merged._original.setdefault(id(weight), (weight, weight.detach().clone()))
                weight.add_(change.to(weight.device, weight.dtype))
        merged.loras.append({"path": str(path), "name": path.stem, "scale": scale, "sha256": digest})
    return merged


def _roots(model) -> dict[str, nn.Module]:
    unet = getattr(getattr(model, "net", None), "unet", None)
    if unet is None or not hasattr(unet.config, "cross_attention_dim"):
        raise UnmixError("--lora takes a Stable Diffusion model (a diffusers SD folder); this model has no SD UNet "
                         "and CLIP text encoder to merge it into")
    return {"unet": unet, "text_encoder": model.text_encoder().model}
