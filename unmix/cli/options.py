"""Options several commands share, declared once: choices as enums (so --help lists them), ranges with min=."""
from __future__ import annotations

from enum import Enum

import torch
import typer

from unmix.distributed import Dist, cpu_threads
from unmix.sampler_names import sampler_names
from unmix.samplers import DEFAULT_SAMPLER, list_samplers


def choices(name: str, values) -> type[Enum]:
    """A str Enum whose members are `values`: typer lists them in --help and rejects anything else."""
    return Enum(name, {v: v for v in values}, type=str)


Sampler = choices("Sampler", list_samplers())
SamplerName = choices("SamplerName", sampler_names())  # `sample`: also A1111 / ComfyUI / diffusers names
Weights = choices("Weights", ("ema", "model"))


def value(choice) -> str | None:
    """The plain string of an enum choice (None stays None)."""
    return None if choice is None else getattr(choice, "value", choice)


def sampler_option(default: str | None = DEFAULT_SAMPLER, what: str = "Sampler"):
    return typer.Option(default, help=f"{what} (default {DEFAULT_SAMPLER}).", show_default=False)


def nfe_option(default: int, what: str = "Network evaluations per sample."):
    return typer.Option(default, min=1, max=10000, help=what)


def seed_option(what: str = "Sample i uses seed + i."):
    return typer.Option(0, help=what)


def device_option():
    return typer.Option("auto", help="auto | cpu | cuda | cuda:N | mps (checked before any work starts).")


def label_option():
    return typer.Option(None, "--label", help="Class for a class-conditional model: a class name or index "
                                              "(sample: one for all, or comma-separated, one per sample).")


def guidance_option():
    return typer.Option(None, "--guidance", min=0.0, max=100.0,
                        help="Classifier-free guidance scale with --label (default 1.5; 1 = none, 0 = unconditional).")


def prompt_option():
    return typer.Option(None, "--prompt", help="Text prompt for a text-conditional model (e.g. \"red apple\").")


def negative_prompt_option():
    return typer.Option(None, "--negative-prompt", help="Guide away from this prompt (text models).")


def use_threads(threads: int | None) -> int | None:
    """The option's callback: every command that declares --threads runs on that many CPU threads, or on the
    default that a busy machine does not slow down (unmix.distributed.cpu_threads), before its body starts."""
    torch.set_num_threads(cpu_threads(threads, Dist()))
    return threads


def threads_option():
    return typer.Option(None, "--threads", min=1, max=1024, callback=use_threads,
                        help="CPU threads (default: OMP_NUM_THREADS if set, else the idle physical cores: the cores "
                             "this process may use less the load average, so that a busy machine gets fewer; shared "
                             "among torchrun's processes).")
