"""`unmix audit SAMPLES --against DATA`: which of any pictures are copies of a dataset's pictures (the copy check
of unmix.metrics.copies), with a sheet of the worst cases."""
from __future__ import annotations

import json

import typer

from unmix import api
from unmix.cli.app import app
from unmix.cli.options import threads_option
from unmix.cli.outputs import check_file_path
from unmix.metrics.copies import copy_lines


@app.command("audit")
def audit_command(
    samples: str = typer.Argument(..., help="Pictures to check: a folder of image files, or a .npy (NCHW or NHW, "
                                            "values in [-1, 1])."),
    against: str = typer.Option(..., "--against", help="The training data: digits, emoji, emoji:styles=all:split="
                                                       "train, folder:PATH, ..."),
    heldout: str = typer.Option(None, help="Real pictures never trained on, as a dataset, for the reference line "
                                           "(default: each training picture against the others)."),
    out: str = typer.Option(None, "--out", help="Write the worst cases to this .png: each sample, then its nearest "
                                                "training picture to its right, most copy-like first."),
    worst: int = typer.Option(32, min=1, max=1024, help="Worst cases on the sheet and in the JSON."),
    json_path: str = typer.Option(None, "--json", help="Also write the figures and the worst cases to this .json."),
    threads: int = threads_option(),
):
    """Copies: the share of pictures whose nearest training picture is under 1/3 of the distance to the second
    nearest (Gu et al. 2023; distances forgive small shifts), their median PSNR to the nearest, and the same for
    real pictures new to the training set."""
    sheet, js = check_file_path(out, ".png"), check_file_path(json_path, ".json")
    result = api.audit(samples, against, heldout=heldout, sheet=sheet, worst=worst)
    for line in copy_lines(result):
        print(line)
    if sheet:
        print(f"sheet:      {sheet} (the {min(worst, result['n'])} most copy-like samples, each beside its nearest "
              "training picture)")
    if js:
        js.write_text(json.dumps(result, indent=2) + "\n")
