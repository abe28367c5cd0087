"""`unmix product clean|square|scene MODEL IMAGE --out OUT.png`: the product-photo jobs of unmix.apps.product on a model
trained by `unmix train --data product`."""
from __future__ import annotations

from pathlib import Path

import typer

from unmix.cli.app import app
from unmix.cli.options import choices, threads_option

product_app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                          help="Product photos: clean to white, frame square, or a new scene behind the product.")
app.add_typer(product_app, name="product")

MODEL = typer.Argument(..., help="A product model: a run folder or checkpoint of `unmix train --data product`.")
IMAGE = typer.Argument(..., help="The photo (PNG or JPEG, any size).")
OUT = typer.Option(..., "--out", help="Output PNG.")
SEED = typer.Option(0, "--seed", min=0, max=2**63 - 1, help="Seed of the sampling noise.")
NFE = typer.Option(None, "--nfe", min=2, max=1000,
                   help="Denoiser grid: square's and scene's drawing (default 20); with --method sample, the alpha's (33).")
Method = choices("Method", ("mean", "sample"))
METHOD = typer.Option("mean", "--method", help="How the product is found: mean = the model's posterior mean of the "
                      "alpha, one network call (the most likely cut-out); sample = one draw per seed (nfe calls).")
REFINE = typer.Option(True, "--refine/--no-refine", help="Snap the model's cut-out to the photo's edges (GrabCut "
                      "seeded by it) with a one-pixel soft edge; --no-refine: the model's own soft alpha.")
GUIDANCE = typer.Option(None, "--guidance", min=0.0, max=100.0,
                        help="Classifier-free guidance on the photo when finding the product (default: none).")
THREADS = threads_option()


def _run(job: str, model: str, image: Path, out: Path, seed: int, nfe: int | None, method, refine: bool,
         guidance: float | None, prompt: str | None = None, backdrop: str | None = None) -> None:
    from unmix.apps import product
    from unmix.cli.outputs import check_file_path
    from unmix.model import load

    check_file_path(out, ".png")
    photo = product.read_photo(image)
    scenery = None if backdrop is None else load(backdrop)
    result = product.run_job(job, load(model), photo, seed=seed, nfe=nfe, method=getattr(method, "value", method),
                             refine=refine, prompt=prompt, guidance=guidance, backdrop=scenery)
    product.write_photo(result, out)
    print(f"wrote {out} ({result.shape[-1]}x{result.shape[-2]})")


@product_app.command()
def clean(model: str = MODEL, image: Path = IMAGE, out: Path = OUT, seed: int = SEED, nfe: int = NFE,
          method: Method = METHOD, refine: bool = REFINE, guidance: float = GUIDANCE, threads: int = THREADS):
    """The product on clean white, at the photo's size (its pixels are the photo's)."""
    _run("clean", model, image, out, seed, nfe, method, refine, guidance)


@product_app.command()
def square(model: str = MODEL, image: Path = IMAGE, out: Path = OUT, seed: int = SEED, nfe: int = NFE,
          method: Method = METHOD, refine: bool = REFINE, guidance: float = GUIDANCE, threads: int = THREADS):
    """The product centred on a white square; a product cut by the frame is completed by outpainting."""
    _run("square", model, image, out, seed, nfe, method, refine, guidance)


@product_app.command()
def scene(model: str = MODEL, image: Path = IMAGE, out: Path = OUT, seed: int = SEED, nfe: int = NFE,
          method: Method = METHOD, refine: bool = REFINE, guidance: float = GUIDANCE, threads: int = THREADS,
          backdrop: str = typer.Option(None, "--backdrop", help="A model of backgrounds that draws the scene (a run of "
                                       "`unmix train --data backgrounds`, or of your own scenes); default: the "
                                       "product model itself, whose backgrounds are coloured noise."),
          prompt: str = typer.Option(None, "--prompt", help="Describe the scene (needs a text-conditioned --backdrop).")):
    """The product, its pixels unchanged, in a new background drawn around it, at the photo's size."""
    _run("scene", model, image, out, seed, nfe, method, refine, guidance, prompt, backdrop)
