"""`unmix synth`: a labelled synthetic image folder (one subfolder per class + labels.csv) from a conditional model."""
from __future__ import annotations

import sys

import typer

from unmix.cli.app import app
from unmix.cli.options import threads_option


@app.command()
def synth(
    checkpoint: str = typer.Argument(..., help="A class-conditional checkpoint folder, or a training output folder"),
    per_class: int = typer.Option(..., min=1, help="Images to write for every class"),
    out: str = typer.Option(..., help="Folder to create: OUT/<class>/*.png and OUT/labels.csv"),
    guidance: float = typer.Option(None, min=0.0, help="Classifier-free guidance scale (default 1.5; 1 = none)"),
    seed: int = typer.Option(0, help="Image i of class c uses seed + i * classes + c"),
    sampler: str = typer.Option(None, help="Sampler name (see `unmix sample --list-samplers`)"),
    nfe: int = typer.Option(32, min=1, help="Network evaluations per image"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT if it already holds files"),
    batch_size: int = typer.Option(256, min=1, help="Images per network batch"),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    threads: int = threads_option(),
):
    """Synthetic training data: PER_CLASS images of every class, in the layout `--data folder:OUT` reads."""
    import torch
    from tqdm import tqdm

    from unmix.apps.synth import synthesize
    from unmix.model import load

    dev = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    model = load(checkpoint, device=dev)
    bar = tqdm(total=per_class * model.num_classes, desc="synth", unit="img", leave=False, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.update(done - bar.n)

    with bar:
        folder = synthesize(model, per_class, out, guidance=guidance, seed=seed, sampler=sampler, nfe=nfe,
                            overwrite=overwrite, batch_size=batch_size, device=dev, callback=progress)
    print(f"{per_class * model.num_classes} images of {model.num_classes} classes from {model.checkpoint}: "
          f"{folder}/<class>/*.png and {folder}/labels.csv", file=sys.stderr)
