"""The models a page serves: run or checkpoint folders named on the command line, or those found under ./runs.

Each is described from its config.json alone (the page lists them at once) and loaded on first use; the dataset
it was trained on is loaded on first use too, for picking example images.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from unmix.data import Dataset, load_dataset
from unmix.errors import UnmixError
from unmix.model import Model, load
from unmix.store import checkpoint as ckpt


@dataclass
class Entry:
    """One servable model: a name for the page, the folder as given, and its checkpoint's config."""

    name: str
    path: str
    config: dict

    @property
    def data(self) -> dict:
        return self.config.get("data") or {}

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.get("shape") or ())

    @property
    def num_classes(self) -> int:
        return int((self.config.get("net") or {}).get("num_classes") or 0)

    @property
    def task(self) -> str:
        """"product" for product-photo models (`unmix train --data product`), else "image"."""
        return "product" if self.data.get("task") == "product" else "image"

    @property
    def is_text(self) -> bool:
        return int((self.config.get("net") or {}).get("text_dim") or 0) > 0

    def describe(self) -> dict:
        """What the page needs to build its controls (no weights read)."""
        names, k = list(self.data.get("class_names") or []), self.num_classes
        classes = names[:k] if len(names) >= k else [str(i) for i in range(k)]
        return {"name": self.name, "path": self.path, "shape": list(self.shape), "data": self.data.get("name"),
                "dataset_size": self.data.get("size"), "classes": classes, "text": self.is_text,
                "step": self.config.get("step"), "sampling": self.config.get("sampling") or {}, "task": self.task}


def servable(config: dict, max_side: int) -> str | None:
    """Why a checkpoint cannot be shown on the page (None when it can): images of 1 or 3 channels, or product
    models (alpha and photo, 4 channels)."""
    data = config.get("data") or {}
    shape = data.get("shape") or []
    channels = (4,) if data.get("task") == "product" else (1, 3)
    if len(shape) != 3 or shape[0] not in channels:
        return f"not an image model (items of shape {list(shape)})"
    if max(shape[1:]) > max_side:
        return f"images of {shape[2]}x{shape[1]} pixels are larger than the page serves ({max_side})"
    return None


def discover(paths: list[str] | None, root: str | Path = "runs", max_side: int = 512) -> tuple[list[Entry], list[str]]:
    """(entries, notes): the named folders (each must be a checkpoint), else every run found under `root`."""
    notes, found = [], []
    if paths:
        for p in paths:
            c = ckpt.open_checkpoint(p)  # a clear UnmixError for anything that is not a checkpoint
            why = servable(c.config, max_side)
            if why:
                raise UnmixError(f"{p}: {why}; the page serves image models")
            found.append((p, c))
    else:
        root = Path(root)
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            try:
                c = ckpt.open_checkpoint(folder)
            except UnmixError:
                continue
            why = servable(c.config, max_side)
            if why:
                notes.append(f"skipping {folder}: {why}")
                continue
            found.append((str(folder), c))
        if not found:
            raise UnmixError(f"no image models found under {root}/; train one (`unmix train`) or name a run folder: "
                             "unmix serve RUN")
    entries, taken = [], set()
    for p, c in found:
        base = Path(p).resolve().name
        if base.startswith(ckpt.PREFIX):  # a checkpoint folder: name it after its run
            base = f"{Path(p).resolve().parent.name}@{c.step}"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}-{k}", k + 1
        taken.add(name)
        entries.append(Entry(name, str(p), c.config))
    return entries, notes


class Models:
    """Entries by name; models and datasets loaded once, on first use, whichever thread asks first."""

    def __init__(self, entries: list[Entry], device="cpu"):
        self.entries = {e.name: e for e in entries}
        self.device = device
        self._models: dict[str, Model] = {}
        self._datasets: dict[str, Dataset] = {}
        self._lock = threading.Lock()

    def entry(self, name, task: str | None = None) -> Entry:
        """The entry called `name`; with `task`, also checked to be a model for that task."""
        if name not in self.entries:
            raise UnmixError(f"unknown model {name!r}; valid: {', '.join(self.entries)}")
        entry = self.entries[name]
        if task is not None and entry.task != task:
            raise UnmixError(f"{name} is a product-photo model: use the Product photos tab" if entry.task == "product"
                             else f"{name} is not a product-photo model (train one with unmix train --data product)")
        return entry

    def model(self, name) -> Model:
        entry = self.entry(name)
        with self._lock:
            if name not in self._models:
                self._models[name] = load(entry.path, device=self.device)
            return self._models[name]

    def dataset(self, name) -> Dataset:
        entry = self.entry(name)
        with self._lock:
            if name not in self._datasets:
                data, shape = entry.data.get("name"), entry.shape
                if not data:
                    raise UnmixError(f"model {name} does not record its dataset; upload an image instead")
                try:
                    ds = load_dataset(data, size=None if data == "digits" else shape[-1])
                except UnmixError as e:
                    raise UnmixError(f"the dataset {data} cannot be loaded ({e}); upload an image instead") from None
                if tuple(ds.shape) != shape:
                    raise UnmixError(f"dataset {data} gives items of shape {list(ds.shape)}, the model expects "
                                     f"{list(shape)}; upload an image instead")
                self._datasets[name] = ds
            return self._datasets[name]
