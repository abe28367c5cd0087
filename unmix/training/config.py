"""What a training run is: its settings (TrainConfig), the per-dataset presets, and their validation.

Every setting is checked (type, range, valid choices) before anything is loaded or written, so a bad value
is one clear error and never a crash half-way through a run. None means "the dataset's default".
"""
from __future__ import annotations

import copy
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from unmix.errors import UnmixError
from unmix.losses import RECIPES, Recipe
from unmix.text.encoder import text_dim_of

CONDITIONS = ("none", "label", "text")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainConfig:
    """Everything a run needs; stored in every checkpoint. None means "the dataset's default"."""

    data: str = "digits"
    size: int | None = None
    backgrounds: str | None = None  # data product / backgrounds: "folder:PATH", a user's own background photos
    out: str | None = None  # default runs/<data>
    init: str | None = None  # start from this checkpoint's weights (fine-tuning): a new run, fresh optimiser
    latent: str | None = None  # latent diffusion: train on the latents of this autoencoder run (unmix.encoders)
    recipe: str = "edm"
    min_snr_gamma: float = 0.0
    sigma_data: float | None = None  # EDM: the data's std (None: the preset's; 0.5 suits images in [-1, 1], 1 latents)
    p_mean: float | None = None  # EDM: mean of ln(sigma) in training (None: EDM's -1.2)
    p_std: float | None = None  # EDM: std of ln(sigma) in training (None: EDM's 1.2)
    steps: int | None = None  # total optimiser steps (a resumed run continues up to it)
    minutes: float | None = None  # wall-clock budget for this invocation
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    warmup_steps: int = 200
    grad_clip: float = 1.0
    ema_halflife_kimg: float | None = None  # EMA half-life in thousands of images
    ema_rampup: float = 0.1  # half-life <= rampup * images seen (a short memory early on)
    accum: int = 1
    seed: int = 0
    cond: str = "none"  # "none" | "label" | "text" (captions through a frozen text encoder)
    label_dropout: float | None = None  # default 0.1 with cond="label" or "text" (for classifier-free guidance)
    text_encoder: str | None = None  # cond="text": a sentence-transformers folder (default: the packaged MiniLM)
    net: dict = field(default_factory=dict)  # overrides of the network config (channels, channel_mult, ...)
    checkpoint_every: int = 1000
    keep: int = 3
    sample_every: int = 1000
    preview: bool = True  # preview grids into out/samples/ (False: none, not even at the end)
    log_every: int = 50
    sampler: str | None = None  # preview grids; default the library's default sampler
    nfe: int = 32
    device: str = "auto"
    threads: int | None = None
    compile: bool = False
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A checked config from keyword settings (unknown names and wrong types are one clear error)."""
        if not isinstance(d, dict):
            raise UnmixError(f"training settings must be a dict, got {type(d).__name__}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise UnmixError(f"unknown training settings {unknown}; valid: {', '.join(known)}")
        hints = typing.get_type_hints(cls)
        for name, value in d.items():
            _check_type(name, value, hints[name])
        return cls(**{k: (float(v) if _wants_float(hints[k]) and isinstance(v, int) and v is not None else v)
                      for k, v in d.items()})


# Settings a resumed run may change. The rest must match the checkpoint, so that an interrupted and resumed run
# equals an uninterrupted one; the rescue settings (learning rate, clipping, warm-up, decay) may change so that a
# run stopped by a non-finite loss can continue from its last good checkpoint.
RUNTIME_KEYS = frozenset({"steps", "minutes", "out", "checkpoint_every", "keep", "sample_every", "preview", "log_every",
                          "sampler", "nfe", "device", "threads", "compile"})
RESCUE_KEYS = frozenset({"lr", "grad_clip", "warmup_steps", "weight_decay"})

# Per-dataset defaults, sized for a 2-core CPU: digits in about 5 minutes; emoji and folders want longer (or a GPU).
PRESETS = {
    "digits": dict(batch_size=128, lr=2e-3, ema_halflife_kimg=20.0, steps=1000,
                   net=dict(kind="unet", channels=32, num_res_blocks=2)),
    # emoji: 2x2 patches into a 64-channel U-Net (16/8/4 pixels at size 32). Per 30 CPU minutes it halves the FD of the
    # 32-channel full-resolution U-Net (16.9 against 31.9) and is the first to draw faces and rounded squares.
    "emoji": dict(batch_size=32, lr=1e-3, ema_halflife_kimg=10.0, steps=20000,
                  net=dict(kind="unet", patch_size=2, channels=64, num_res_blocks=1)),
    # emoji:styles=...: the five-style pictures (unmix.data.emoji_styles). The emoji U-Net given a *local* neighbours'
    # guess (unmix.nets.neighbours, patch_scale): each pixel follows the training pictures whose patch around it
    # matches, so the guess combines patches of many pictures; every row's own picture is left out in training.
    "emoji-styles": dict(batch_size=32, lr=1e-3, ema_halflife_kimg=10.0, steps=20000,
                         net=dict(kind="unet", patch_size=2, channels=64, num_res_blocks=1, neighbours=True,
                                  neighbours_patch=3.0, neighbours_min_patch=5)),
    # backgrounds: the model that draws the product jobs' scenes (wallpaper crops at 32 px); the emoji recipe
    "backgrounds": dict(batch_size=32, lr=1e-3, ema_halflife_kimg=10.0, steps=20000,
                        net=dict(kind="unet", patch_size=2, channels=64, num_res_blocks=1)),
    "image": dict(batch_size=64, lr=1e-3, ema_halflife_kimg=50.0, steps=20000,
                  net=dict(kind="unet", channels=64, num_res_blocks=2)),
    # latent diffusion on an f=4 autoencoder's unit-std latents (8x8x4 for 32x32 emoji), the net given the training
    # set's ideal denoiser as input (unmix.nets.neighbours). After 30 CPU minutes, both stages inside them
    # (benchmarks/emoji_budget.py): FD 2.6-3.2 at leave-out 0 (near copies of training items) and 10.4 at leave-out 1
    # (new emoji), against 32.2 for the emoji preset in the same benchmark. Leave-out 1 trades copies for new pictures.
    "latent": dict(batch_size=32, lr=2e-3, ema_halflife_kimg=10.0, steps=20000, sigma_data=1.0, p_mean=0.0,
                   net=dict(kind="unet", channels=64, channel_mult=[1, 2], num_res_blocks=1, attn_levels=[1],
                            neighbours=True)),
    # product: [alpha, photo] given the photo and its GrabCut mask (unmix.data.product_job.ProductJob); the condition
    # dropped for 20% of the draws so that the same net inpaints scenes and borders unconditionally (unmix.apps.product).
    # Patches fold the image to a 16-pixel grid at any size (2x2 at 32, 4x4 at 64). Noise levels centred higher
    # than EDM's (ln sigma ~ N(0.5, 1)): a binary mask is read off its own noisy copy below sigma ~ 0.3, so EDM's
    # default spends most draws where nothing about the product is learned (IoU 0.31 against 0.22 at 800 steps).
    "product": dict(batch_size=16, lr=1e-3, ema_halflife_kimg=5.0, steps=20000, label_dropout=0.2, p_mean=0.5,
                    p_std=1.0, grid=16, net=dict(kind="unet", channels=64, num_res_blocks=1)),
    # folder:PATH on a CPU (chosen by run_preset; a GPU gets "image"): the emoji recipe, 2x2 patches into a 64-channel
    # U-Net, 5.0M parameters at 32 px (1.2 s/step at batch 32 on one core; "image"'s 9.9M took 6 s/step at batch 64
    # in issue 34), for 30 minutes unless steps= or minutes= say otherwise.
    "folder-cpu": dict(batch_size=32, lr=1e-3, ema_halflife_kimg=10.0, minutes=30.0,
                       net=dict(kind="unet", patch_size=2, channels=64, num_res_blocks=1)),
    "points": dict(batch_size=512, lr=1e-3, ema_halflife_kimg=50.0, steps=4000,
                   net=dict(kind="mlp", hidden=256, depth=4)),
}


def run_preset(name: str, device: str) -> str:
    """The preset a run's data gets on its device: a folder of images on a CPU gets the CPU-sized folder-cpu."""
    if name.startswith("emoji:"):
        return "emoji-styles"
    return "folder-cpu" if name.startswith("folder:") and device == "cpu" else name


def preset_for(name: str, is_image: bool) -> dict:
    """A dataset's preset by its name ("emoji:styles=all:split=train" is emoji's), else the generic one."""
    if name.startswith("emoji:"):
        return PRESETS["emoji-styles"]
    return PRESETS.get(name) or PRESETS.get(name.split(":")[0]) or PRESETS["image" if is_image else "points"]


def _wants_float(hint) -> bool:
    return float in (typing.get_args(hint) or (hint,))


def _check_type(name: str, value, hint) -> None:
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) else (hint,)
    allowed = tuple(typing.get_origin(a) or a for a in allowed)
    if value is None and type(None) in allowed:
        return
    ok = any(isinstance(value, a) and not (isinstance(value, bool) and a in (int, float)) for a in allowed)
    ok = ok or (float in allowed and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        want = " or ".join("None" if a is type(None) else a.__name__ for a in allowed)
        raise UnmixError(f"{name}= must be {want}, got {value!r}")


def check_config(cfg: TrainConfig) -> None:
    """Reject impossible settings with one clear message each, before anything is loaded or written."""
    if cfg.steps is not None and cfg.steps < 1:
        raise UnmixError(f"steps= must be >= 1, got {cfg.steps}")
    for name in ("minutes", "batch_size", "lr", "ema_halflife_kimg", "accum", "checkpoint_every", "sample_every",
                 "log_every", "nfe", "threads", "size", "sigma_data", "p_std", "keep"):
        value = getattr(cfg, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UnmixError(f"{name}= must be a finite number > 0, got {value}")
    for name in ("warmup_steps", "grad_clip", "weight_decay", "min_snr_gamma", "ema_rampup"):
        value = getattr(cfg, name)
        if not (math.isfinite(value) and value >= 0):
            raise UnmixError(f"{name}= must be a finite number >= 0, got {value}")
    if cfg.recipe not in RECIPES:
        raise UnmixError(f"unknown recipe {cfg.recipe!r}; valid: {', '.join(RECIPES)}")
    for name in ("p_mean", "p_std"):
        value = getattr(cfg, name)
        if value is not None and (not math.isfinite(value) or cfg.recipe != "edm"):
            raise UnmixError(f"{name}= must be a finite number and needs recipe='edm', got {value} "
                             f"with recipe {cfg.recipe!r}")
    if cfg.backgrounds is not None:
        if not (isinstance(cfg.backgrounds, str) and cfg.backgrounds.startswith("folder:")):
            raise UnmixError(f"backgrounds= must be 'folder:PATH' (a folder of your own photos), got {cfg.backgrounds!r}")
        if cfg.data not in ("product", "backgrounds"):
            raise UnmixError(f"backgrounds= is for data='product' or 'backgrounds', not {cfg.data!r}")
    if cfg.cond not in CONDITIONS:
        raise UnmixError(f"cond= must be one of {', '.join(CONDITIONS)}, got {cfg.cond!r}")
    if cfg.label_dropout is not None and not 0 <= cfg.label_dropout < 1:
        raise UnmixError(f"label_dropout= must be in [0, 1), got {cfg.label_dropout}")
    if cfg.precision not in PRECISIONS:
        raise UnmixError(f"precision= must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.out is not None:
        _check_out(Path(cfg.out))
    if cfg.sampler is not None:
        from unmix.samplers import get_sampler

        get_sampler(cfg.sampler)


def _check_out(out: Path) -> None:
    """The run folder, or the nearest part of its path that exists, must be a writable folder."""
    if out.exists() and not out.is_dir():
        raise UnmixError(f"out={str(out)!r} is a file; a run writes into a folder, choose another out=")
    existing = next(p for p in [out, *out.parents] if p.exists())
    if not existing.is_dir():
        raise UnmixError(f"out={str(out)!r} cannot be created: {existing} is a file; choose another out=")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UnmixError(f"out={str(out)!r} cannot be created: {existing} is not writable (permission denied); "
                         "choose another out=")


def default_out(data: str) -> str:
    name = Path(data[len("folder:"):]).expanduser().resolve().name if data.startswith("folder:") else data
    return str(Path("runs") / (re.sub(r"[^A-Za-z0-9_.-]+", "-", name) or "folder"))


def image_net_defaults(shape: tuple[int, ...], patch: int = 1) -> dict:
    """Halve the size (after folding patch x patch pixels) per level down to 4 pixels (2 for images of 8 or
    less), at most 5 levels; self-attention at 8 pixels and below (cheap there, where layout is decided)."""
    if not isinstance(patch, int) or patch < 1:
        raise UnmixError(f"patch_size must be an integer >= 1, got {patch!r}")
    if any(side % patch for side in shape[1:]):
        raise UnmixError(f"images of {shape[1]}x{shape[2]} pixels do not split into {patch}x{patch} patches; "
                         f"pick a size divisible by {patch} or another patch_size")
    side = min(shape[1:]) // patch
    levels = _levels(side)
    return dict(channel_mult=[1] + [2] * (levels - 1), attn_levels=[i for i in range(1, levels) if side // 2**i <= 8])


def _levels(side: int) -> int:
    levels = 1
    while levels < 5 and side % 2**levels == 0 and side // 2**levels >= (4 if side > 8 else 2):
        levels += 1
    return levels


def _halves_fully(side: int) -> bool:
    """Whether the U-Net's halving reaches its coarsest level (4-7 pixels, 2-3 for 8 or less) or its 5 levels."""
    levels = _levels(side)
    return levels == 5 or side // 2**levels < (4 if side > 8 else 2)


def check_size(size: int, patch: int = 1) -> None:
    """Refuse an image size that the U-Net cannot halve down to its coarsest level: it would silently get a
    shallower network (30 px halves once, to 15: 2 levels where 32 px gets 4). Names the nearest sizes that work."""
    if size % patch or _halves_fully(size // patch):
        return
    fits = [s for s in range(patch, 4 * size + patch, patch) if _halves_fully(s // patch)]
    below, above = max((s for s in fits if s < size), default=None), min(s for s in fits if s > size)
    grid, levels = size // patch, _levels(size // patch)
    halved = " -> ".join(str(grid // 2**i) for i in range(levels))
    nearest = f"size={below} or size={above}" if below else f"size={above}"
    folded = f" in {patch}x{patch} patches" if patch > 1 else ""
    raise UnmixError(f"size={size}{folded} gives a {grid}-pixel grid that the U-Net halves only to {halved} ({levels} level"
                     f"{'s' * (levels != 1)}, a shallower network than the preset's); use {nearest}, or give the levels "
                     "with channel_mult=")


def fill_defaults(cfg: TrainConfig, name: str, is_image: bool, has_labels: bool) -> TrainConfig:
    """A copy with the dataset preset's batch size, learning rate, EMA, steps, output folder and dropout."""
    preset = preset_for(name, is_image)
    cfg = copy.deepcopy(cfg)
    for key in ("batch_size", "lr", "ema_halflife_kimg"):
        setattr(cfg, key, getattr(cfg, key) or preset[key])
    if cfg.steps is None and cfg.minutes is None:
        cfg.steps, cfg.minutes = preset.get("steps"), preset.get("minutes")
    if cfg.sigma_data is None:
        cfg.sigma_data = preset.get("sigma_data", 0.5)
    if cfg.recipe == "edm":
        cfg.p_mean = preset.get("p_mean") if cfg.p_mean is None else cfg.p_mean
        cfg.p_std = preset.get("p_std") if cfg.p_std is None else cfg.p_std
    cfg.out = cfg.out or default_out(cfg.data)
    if cfg.cond == "label" and not has_labels:
        raise UnmixError(f"cond='label' needs a labelled dataset; {name} has no labels")
    if cfg.cond in ("label", "text") or "label_dropout" in preset:  # the preset's: an image-conditioned dataset
        cfg.label_dropout = preset.get("label_dropout", 0.1) if cfg.label_dropout is None else cfg.label_dropout
    else:
        cfg.label_dropout = 0.0
    if cfg.sampler is None:
        from unmix.samplers import DEFAULT_SAMPLER

        cfg.sampler = DEFAULT_SAMPLER
    return cfg


def network_config(cfg: TrainConfig, name: str, shape: tuple[int, ...], num_classes: int, noise_scale: float) -> dict:
    """The network config for this run: the preset's, sized to the data, with the user's overrides on top."""
    preset = preset_for(name, len(shape) == 3)
    if cfg.net.get("kind") == "autoencoder":  # latent diffusion's first stage (unmix.encoders): sized to the images
        return {"in_channels": shape[0], "image_size": shape[-1], **cfg.net}
    if len(shape) == 3:
        # a preset's "grid": fold patches so that the network works on a grid of that side at any image size
        patch = cfg.net.get("patch_size", preset["net"].get("patch_size", max(1, min(shape[1:]) // preset.get("grid", 1 << 30))))
        if cfg.size == shape[-1] and "channel_mult" not in cfg.net:  # a pixel run at a size the user chose
            check_size(cfg.size, patch)
        net = {"kind": "unet", **image_net_defaults(shape, patch), **preset["net"], "in_channels": shape[0]}
        net.update({"patch_size": patch} if patch != 1 else {})
    else:
        net = {**preset["net"], "dim": shape[0]}
    net.update(num_classes=num_classes, noise_scale=noise_scale)
    if "layout" in cfg.net and cfg.cond != "text":
        raise UnmixError(f"--layout (net layout={cfg.net['layout']!r}) is for text models: add --cond text")
    if cfg.cond == "text" and len(shape) == 3:  # the prompt's first guess of the picture (unmix.nets.layout),
        net.update(layout="retrieval", layout_size=min(32, *shape[1:]))  # from a table of training pictures
        net.pop("neighbours", None)  # the latent preset's guess is for unconditional and label nets
    net.update(cfg.net)
    if net.get("neighbours"):  # new pictures by default: the copying mode (0) must be asked for by name
        net.setdefault("neighbours_leave_out", 1.0)
    return net


def resolve(cfg: TrainConfig, dataset, preset: str, stored: dict | None = None) -> tuple[TrainConfig, Recipe, dict]:
    """The one place a run's settings are resolved: (config with the preset's defaults filled in, recipe, network
    config). A new run's network is sized to the data with the user's overrides, the text width of a text run and
    the condition channels of an image-conditioned dataset; a resumed or fine-tuned run keeps the network and recipe
    of its checkpoint (`stored`, its config.json). `preset`: the encoder's (latents) or the dataset's name."""
    ds = dataset
    cfg = fill_defaults(cfg, preset, ds.is_image, ds.labels is not None)
    if stored is not None:
        return cfg, Recipe.from_dict(stored["recipe"]), stored["net"]
    noise = {k: getattr(cfg, k) for k in ("p_mean", "p_std") if getattr(cfg, k) is not None}
    recipe = Recipe.from_name(cfg.recipe, min_snr_gamma=cfg.min_snr_gamma, sigma_data=cfg.sigma_data, **noise)
    net = network_config(cfg, preset, ds.shape, ds.num_classes if cfg.cond == "label" else 0, recipe.noise_scale)
    if cfg.cond == "text":
        net["text_dim"] = text_dim_of(cfg.text_encoder)
    if getattr(ds, "cond_shape", None):  # an image-conditioned dataset (product): SR3/Palette concatenation
        net["cond_channels"] = ds.cond_shape[0]
    return cfg, recipe, net
