"""Read a user's Stable Diffusion 1.x / 2.x model from its diffusers folder.

    unmix.load("my-sd-folder")          # StableDiffusionPipeline.save_pretrained: unet/ vae/ text_encoder/ tokenizer/ scheduler/

It becomes a Model of the parts in unmix.adapters.sd_parts: the UNet a denoiser, the VAE its encoder, CLIP its
text encoder. Only safetensors are read; a .ckpt / .bin is refused, never unpickled. A single checkpoint file
(the original CompVis / A1111 layout, .safetensors) is read by unmix.adapters.sd_single_file.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from unmix.adapters.sd_parts import build_stable_diffusion, libraries, read_state
from unmix.adapters.sd_single_file import read_single_file
from unmix.adapters.weights import PICKLES, read_json, weight_files
from unmix.errors import UnmixError

PARTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def is_stable_diffusion(path) -> bool:
    """True for what read_stable_diffusion takes (or refuses in one line): an SD folder, or a checkpoint file."""
    path = Path(path).expanduser()
    if path.is_file():
        return path.suffix in (".safetensors", *PICKLES)
    return is_sd_folder(path)


def read_stable_diffusion(path, schedule: dict | None = None):
    """(network, recipe, data, encoder, text encoder) of an SD folder or single-file checkpoint; `schedule` overrides
    the scheduler settings (e.g. {"prediction_type": "v_prediction"} for an SD 2.x 768-v model)."""
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise UnmixError(f"{path} is a pickle ({path.suffix}) and unmix never unpickles files (they can run code); "
                             "use the model's .safetensors file")
        return read_single_file(path, schedule)
    return read_sd_folder(path, schedule)


def is_sd_folder(path) -> bool:
    """True for a pipeline folder whose model_index.json names a UNet2DConditionModel and a VAE."""
    path = Path(path).expanduser()
    if not (path / "model_index.json").is_file():
        return False
    try:
        index = read_json(path / "model_index.json")
    except UnmixError:
        return False
    unet = index.get("unet")
    return isinstance(unet, list) and unet[-1] == "UNet2DConditionModel" and bool(index.get("vae"))


def read_sd_folder(path, schedule: dict | None = None):
    """(network, recipe, data, encoder, text encoder) of a diffusers Stable Diffusion folder; `schedule`
    overrides scheduler settings (e.g. {"prediction_type": "v_prediction"})."""
    path = Path(path).expanduser()
    missing = [p for p in PARTS if not (path / p).is_dir()]
    if missing:
        raise UnmixError(f"{path} is not a whole Stable Diffusion folder: it lacks {', '.join(m + '/' for m in missing)}")
    files = {"unet": weight_files(path / "unet", "diffusion_pytorch_model"),
             "vae": weight_files(path / "vae", "diffusion_pytorch_model"),
             "text_encoder": weight_files(path / "text_encoder", "model")}
    _, transformers = libraries()
    configs = {k: read_json(path / k / "config.json") for k in files}
    digests = {"text_encoder": hashlib.sha256(), "unet": hashlib.sha256()}  # the text encoder's; the model's hash
    states = {k: read_state(f, digests.get(k)) for k, f in files.items()}
    try:
        tokenizer = transformers.CLIPTokenizer.from_pretrained(str(path / "tokenizer"), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise UnmixError(f"{path / 'tokenizer'} is not a readable CLIP tokenizer ({e})") from None
    scheduler = read_json(path / "scheduler" / "scheduler_config.json")
    parts = build_stable_diffusion(configs, states, tokenizer, scheduler, schedule, path,
                                   digests["text_encoder"].hexdigest())
    parts[2]["sha256"] = digests["unet"].hexdigest()  # the UNet's weights: the "Model hash" of PNG parameters
    return parts
