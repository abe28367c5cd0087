"""Checkpoints as folders that are safe to share: nothing in them is ever unpickled.

    checkpoint-00001000/
      config.json         network, recipe, data and training settings (enough to rebuild everything)
      model.safetensors   raw weights
      ema.safetensors     exponential moving average of the weights (what sampling uses)
      state.safetensors   optimiser tensors and RNG states, for --resume
      state.json          the non-tensor rest of the training state

A checkpoint is written into a hidden temporary folder and renamed into place with os.replace, so
a crash mid-write leaves the previous checkpoints as they were. A training output folder holds
several checkpoints; the one with the highest step is the latest.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save_file

from unmix.errors import UnmixError
from unmix.store.files import atomic_folder

FORMAT, VERSION = "unmix-checkpoint", 1
PREFIX = "checkpoint-"
_NAME = re.compile(rf"^{PREFIX}(\d+)$")
WEIGHTS = ("ema", "model")
KNOWN_KEYS = frozenset({"format", "version", "step", "net", "recipe", "data", "train", "images_seen", "unmix_version",
                        "autoencoder", "objective", "sampling"})


def _tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


# -- optimiser state <-> (tensors, json) ----------------------------------------------------------
def flatten_state(obj, prefix: str = "") -> tuple[dict[str, torch.Tensor], object]:
    """Split a nested dict/list structure into a flat {path: tensor} map and a JSON skeleton.

    Tensors are replaced in the skeleton by {"$tensor": path}; dict keys are kept with their type
    ({"$int": k} marks integer keys, as in optimizer.state_dict()).
    """
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}, {"$tensor": prefix}
    if isinstance(obj, dict):
        tensors, items = {}, []
        for k, v in obj.items():
            t, s = flatten_state(v, f"{prefix}.{k}" if prefix else str(k))
            tensors.update(t)
            items.append([{"$int": k} if isinstance(k, int) else k, s])
        return tensors, {"$dict": items}
    if isinstance(obj, (list, tuple)):
        tensors, items = {}, []
        for i, v in enumerate(obj):
            t, s = flatten_state(v, f"{prefix}.{i}")
            tensors.update(t)
            items.append(s)
        return tensors, items
    return {}, obj


def unflatten_state(skeleton, tensors: dict[str, torch.Tensor]):
    if isinstance(skeleton, dict) and "$tensor" in skeleton:
        return tensors[skeleton["$tensor"]]
    if isinstance(skeleton, dict) and "$dict" in skeleton:
        return {(k["$int"] if isinstance(k, dict) else k): unflatten_state(v, tensors) for k, v in skeleton["$dict"]}
    if isinstance(skeleton, list):
        return [unflatten_state(v, tensors) for v in skeleton]
    return skeleton


# -- writing --------------------------------------------------------------------------------------
def write_folder(final: Path, config: dict, weights: dict[str, dict[str, torch.Tensor]], state: dict | None = None,
                 step: int = 0) -> Path:
    """Write one checkpoint folder atomically: into a hidden temporary sibling, fsynced, then renamed into place.

    `weights` maps a file stem ("model", "ema") to a state dict; `state` is any nested structure of tensors and
    JSON values (optimiser, RNG, counters). An existing folder of the same name is replaced only once the new
    one is complete, so a crash at any point leaves either the old or the new folder, never a mixture.
    """
    final = Path(final)
    if final.exists() and not final.is_dir():
        raise UnmixError(f"{final} is a file; a checkpoint is written as a folder, choose another path")
    with atomic_folder(final) as tmp:
        _write_files(tmp, step, config, weights, state)
    return final


def save_checkpoint(run_dir: str | os.PathLike, step: int, config: dict, weights: dict[str, dict[str, torch.Tensor]],
                    state: dict | None = None, keep: int = 3) -> Path:
    """Write checkpoint-<step> into run_dir (see write_folder), then delete all but the newest `keep`."""
    final = write_folder(Path(run_dir) / f"{PREFIX}{step:08d}", config, weights, state, step)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_files(folder: Path, step: int, config: dict, weights, state) -> None:
    _write_json(folder / "config.json", {"format": FORMAT, "version": VERSION, **config, "step": step})
    for stem, tensors in weights.items():
        save_file(_tensors(tensors), folder / f"{stem}.safetensors", metadata={"format": FORMAT})
    if state is not None:
        tensors, skeleton = flatten_state(state)
        save_file(_tensors(tensors), folder / "state.safetensors", metadata={"format": FORMAT})
        _write_json(folder / "state.json", skeleton)


# -- finding and reading --------------------------------------------------------------------------
def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints in a training output folder, oldest first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _describe_file(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:1] == b"\x80" or head == b"PK\x03\x04":
        return (f"{path} is a pickle / torch.save file, not an unmix checkpoint; unmix never unpickles files "
                "(they can run code). A checkpoint is a folder with config.json and model.safetensors")
    return f"{path} is a file, not an unmix checkpoint folder (a folder with config.json and model.safetensors)"


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint folder itself, or the latest checkpoint inside a training output folder."""
    if not isinstance(path, (str, os.PathLike)):
        raise UnmixError(f"a checkpoint is a folder path (str or Path), got {type(path).__name__} {path!r}")
    path = Path(path).expanduser()
    if not path.exists():
        raise UnmixError(f"checkpoint {path} does not exist")
    if path.is_file():
        raise UnmixError(_describe_file(path))
    if (path / "config.json").is_file():
        return path
    found = list_checkpoints(path)
    if not found:
        raise UnmixError(f"{path} holds no checkpoint (expected config.json + model.safetensors, "
                         f"or {PREFIX}* folders from `unmix train`)")
    return found[-1]


@dataclass
class Checkpoint:
    """A checkpoint folder, read lazily: config first, tensors on demand."""

    path: Path
    config: dict

    @property
    def step(self) -> int:
        return int(self.config.get("step", 0))

    def weights(self, which: str = "ema") -> dict[str, torch.Tensor]:
        """The tensors of one weight file ("ema" or "model"), refused when any holds NaN or inf: such a file still
        reads, and would otherwise sample black pictures or resume a broken run."""
        if which not in WEIGHTS:
            raise UnmixError(f"unknown weights {which!r}; valid: {', '.join(WEIGHTS)}")
        path = self.path / f"{which}.safetensors"
        tensors = _load_tensors(path)
        problem = _non_finite(path, tensors)
        if problem:
            raise UnmixError(problem)
        return tensors

    def training_state(self) -> dict:
        skeleton_path = self.path / "state.json"
        if not skeleton_path.is_file():
            raise UnmixError(f"checkpoint {self.path} has no training state (state.json); it can be sampled, "
                             "not resumed")
        skeleton = _read_json(skeleton_path)
        return unflatten_state(skeleton, _load_tensors(self.path / "state.safetensors"))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnmixError(f"{path} is not valid JSON ({e}); the checkpoint is damaged") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UnmixError(f"checkpoint file {path} is missing")
    try:
        return load(path.read_bytes())  # in memory, not mapped: a file replaced later cannot crash us
    except (SafetensorError, OSError, ValueError) as e:
        raise UnmixError(f"{path} is not a readable safetensors file ({e}); the checkpoint is damaged") from None


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Locate and validate a checkpoint (its config), without loading tensors yet."""
    folder = resolve_checkpoint(path)
    config = _read_json(folder / "config.json")
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise UnmixError(f"{folder} is not an unmix checkpoint (config.json lacks \"format\": \"{FORMAT}\")")
    if not isinstance(config.get("version", 0), int):
        raise UnmixError(f"{folder}/config.json: 'version' must be an integer; the checkpoint is damaged")
    if int(config.get("version", 0)) > VERSION:
        raise UnmixError(f"{folder} was written by a newer unmix (format version {config['version']}); upgrade unmix")
    for key in ("net", "recipe"):
        if not isinstance(config.get(key), dict):
            raise UnmixError(f"{folder}/config.json has no usable {key!r} section; the checkpoint is damaged")
    for key in ("data", "train"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise UnmixError(f"{folder}/config.json: its {key!r} section must be an object; the checkpoint is damaged")
    unknown = sorted(set(config) - KNOWN_KEYS)
    if unknown:
        raise UnmixError(f"{folder}/config.json has unknown sections {unknown}; valid: {', '.join(sorted(KNOWN_KEYS))}")
    _check_shape(folder, config)
    return Checkpoint(folder, config)


def _check_shape(folder: Path, config: dict) -> None:
    """The data's item shape: positive integers, agreeing with the network's input (channels for a U-Net, the
    dimension for an MLP), so that a hand-edited shape is reported here and not as a crash inside sampling."""
    shape = (config.get("data") or {}).get("shape")
    if shape is None:
        return
    if not (isinstance(shape, list) and shape and all(isinstance(s, int) and not isinstance(s, bool) and s > 0
                                                      for s in shape)):
        raise UnmixError(f"{folder}/config.json: data shape must be a list of positive integers, got {shape!r}; "
                         "the checkpoint is damaged")
    net = config["net"]
    if isinstance(config.get("autoencoder"), dict):  # a latent model: the data's pixels enter through the autoencoder
        net = config["autoencoder"]
    takes = net.get("in_channels") if len(shape) == 3 else net.get("dim") if len(shape) == 1 else None
    if takes is not None and takes != shape[0]:
        raise UnmixError(f"{folder}/config.json: data shape {shape} does not fit the network's input of {takes}; "
                         "the checkpoint is damaged")


def verify_weights(c: Checkpoint) -> list[str]:
    """Problems with the checkpoint's weight files (missing, unreadable, or holding NaN or inf: a file damaged
    inside its data still reads), checked by reading each one."""
    problems = []
    for stem in WEIGHTS:
        path = c.path / f"{stem}.safetensors"
        try:
            tensors = _load_tensors(path)
        except UnmixError as e:
            problems.append(str(e))
            continue
        problem = _non_finite(path, tensors)
        if problem:
            problems.append(problem)
    return problems


def _non_finite(path: Path, tensors: dict[str, torch.Tensor]) -> str | None:
    """The problem line for a weight file holding NaN or inf (the trainer never saves one), or None."""
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not bad:
        return None
    more = f" and {len(bad) - 1} other tensors" if len(bad) > 1 else ""
    return (f"{path} holds NaN or inf values in {bad[0]}{more}; the checkpoint is damaged (use an earlier "
            f"checkpoint of the run)")
