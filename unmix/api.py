"""What a user calls. Three lines:

    model = unmix.train("digits")                  # or unmix.load("runs/digits")
    images = model.sample(64, seed=0)               # [64, 1, 8, 8] float in [-1, 1]
    unmix.save_grid(images, "digits.png")

and the rest of the job: `resume` or fine-tune (`train(..., init=CHECKPOINT)`) a run, `inpaint` and `edit` images,
`evaluate` sample quality (copies of training pictures included), `audit` any pictures for copies, `nll`
likelihoods, and `forward_pictures` of the noising process. Everything here is
a short composition of the library below it; the CLI and the web page call these and nothing deeper.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from unmix.data import load_dataset
from unmix.data.images import load_image_for, pil_to_array, read_image, render_batch, resize_crop, save_png
from unmix.data.pictures import dataset_pictures, fit_pictures, heldout_spec, read_pictures
from unmix.data.toys import load_toy
from unmix.errors import UnmixError
from unmix.likelihood import METHODS, data_levels, ode_bits_per_dim, toy_nll, uniform_bits_per_dim, vlb_bits_per_dim
from unmix.metrics.copies import check_copies
from unmix.metrics.prompts import prompt_adherence
from unmix.metrics.quality import check_count, check_data
from unmix.metrics.quality import evaluate as evaluate_samples
from unmix.metrics.toys import TOYS
from unmix.model import Model, load
from unmix.samplers import get_sampler
from unmix.samplers import sample as samplers_sample
from unmix.show import forward_gif, forward_strip
from unmix.training import trainer
from unmix.training.config import TrainConfig, default_out
from unmix.training.latent_run import latent_stages


def train(data: str = "digits", resume: bool = False, progress: bool = True, latent: bool = False,
          autoencoder: str | None = None, **settings) -> Model:
    """Train (settings as unmix.training.config.TrainConfig) and return the trained Model (EMA weights).

    resume=True continues the run in `out` (default runs/<data>) with only run-time and rescue settings changed;
    init=CHECKPOINT starts a new run from a trained model's weights (fine-tuning on new data or settings).
    latent=True is latent diffusion in one call: an autoencoder trained into OUT/autoencoder first (half of
    minutes=; steps= caps it at min(steps, 700)), or `autoencoder=` an autoencoder run's folder, then the diffusion
    on its latents (steps= caps that stage too)."""
    if autoencoder is not None and not latent:
        raise UnmixError("autoencoder= is for latent diffusion: add latent=True")
    if latent:
        settings, resume, stage = latent_stages({**settings, "data": data}, resume, autoencoder, progress=progress)
        if stage.interrupted:
            raise KeyboardInterrupt(f"stopped by {stage.result.stopped_by} in the autoencoder stage; checkpoint "
                                    f"{stage.result.checkpoint}")
        settings.pop("data")
    if resume:
        run = trainer.resume(settings.pop("out", None) or default_out(data), **settings)
    else:
        run = trainer.start(TrainConfig.from_dict({**settings, "data": data}))
    result = run.train(progress=progress)
    if result.stopped_by in ("SIGINT", "SIGTERM"):
        raise KeyboardInterrupt(f"stopped by {result.stopped_by} at step {result.step}; checkpoint {result.checkpoint}")
    return load(result.checkpoint)


def sample(model, n=16, **options) -> torch.Tensor:
    """Samples from a Model or a checkpoint path (n samples; options as for Model.sample), or from any
    denoiser D(x, sigma[, cond]) with `n` a shape [N, ...] (options as for unmix.samplers.sample)."""
    if isinstance(model, (Model, str, os.PathLike)):
        return _model(model).sample(n, **options)
    if not callable(model):
        raise UnmixError(f"expected a Model, a checkpoint path or a denoiser D(x, sigma), got {model!r:.60}")
    if not (isinstance(n, (tuple, list)) and all(isinstance(v, int) and not isinstance(v, bool) for v in n)):
        raise UnmixError(f"with a denoiser, n= is the shape to draw, a tuple of integers (N, ...), got {n!r:.60}")
    return samplers_sample(model, n, **options)


def inpaint(model, image, mask, n: int = 8, **options) -> torch.Tensor:
    """n completions of an image (a tensor [C, H, W] or an image file) where the mask (a bool tensor or a mask
    image: white = fill in) is set; options as for Model.inpaint (labels, guidance, method, sampler, nfe, ...)."""
    model = _model(model)
    x, size = _image(image, model.shape)
    if isinstance(mask, (str, os.PathLike)):
        from unmix.data.images import load_mask_for

        mask = load_mask_for(mask, size, model.shape)
    return model.inpaint(x, mask, n, **options)


def edit(model, image, strength: float, n: int = 8, **options) -> torch.Tensor:
    """n SDEdit edits of an image (tensor or file) at `strength`; options as for Model.edit."""
    model = _model(model)
    return model.edit(_image(image, model.shape)[0], strength, n, **options)


def evaluate(model, n: int = 1000, sampler: str | None = None, nfe: int | None = None, seed: int = 0,
             data: str | None = None, device=None, callback=None, prompts: list[str] | None = None,
             guidance: float | None = None) -> dict:
    """Sample n items from a model (sample i uses seed + i) and measure them against its training data.

    With `prompts` (a text model trained on emoji), n samples are drawn for each prompt and prompt adherence
    (unmix.metrics.prompts: identity top-1/top-5 and group accuracy, keyword hits, retrieval) is reported
    beside FD, KID, precision and recall of all of them. sampler and nfe default to the model's own. A diffusers
    folder is measured against the dataset named by `data`. Images also get "copies" (unmix.metrics.copies): the
    share of samples that copy a training picture and their median PSNR to the nearest one, beside the same for
    real pictures the run never saw (the held-out split of data that has one, else leave-one-out). Five-style
    emoji data ("emoji:styles=all:split=train") adds "fd_heldout", FD to the held-out pictures, and "heldout_real",
    the figures of those real pictures (unmix.metrics.styles)."""
    model = _model(model, device)
    sampler, nfe = model.sampling_defaults(sampler, nfe)
    get_sampler(sampler)
    trained_on = _measured_against(model, data)
    check_data(trained_on)
    if prompts is None:
        check_count(n, trained_on)
        samples = model.sample(n, seed=seed, sampler=sampler, nfe=nfe, callback=callback, guidance=guidance)
        result = {**evaluate_samples(samples, trained_on, seed), "data": trained_on, "sampler": sampler, "nfe": nfe}
        return result if trained_on in TOYS else {**result, "copies": _copies(samples, trained_on)}
    if trained_on != "emoji" or not model.is_text:
        raise UnmixError(f"prompt adherence is measured for text models trained on emoji; {model.checkpoint} is "
                         f"{'a text' if model.is_text else 'not a text'} model of {trained_on}")
    per_sample = [p for p in prompts for _ in range(n)]
    check_count(len(per_sample), trained_on)
    samples = model.sample(len(per_sample), seeds=[seed + i for _ in prompts for i in range(n)], sampler=sampler,
                           nfe=nfe, callback=callback, prompts=per_sample, guidance=guidance)
    adherence = {f"prompt_{k}": v for k, v in prompt_adherence(samples, per_sample).items()}
    return {**evaluate_samples(samples, trained_on, seed), **adherence, "data": trained_on, "sampler": sampler,
            "nfe": nfe, "guidance": guidance, "copies": _copies(samples, trained_on)}


def audit(samples, against: str, heldout: str | None = None, sheet=None, worst: int = 32) -> dict:
    """The copy check (unmix.metrics.copies) of any pictures against any image dataset.

    samples: pictures [N, C, H, W] in [-1, 1], a .npy of them, or a folder of image files (pictures enlarged by a
    whole factor, as `unmix sample` writes them, are averaged back). against: the training data, read at the
    samples' side where it has a choice. heldout: real pictures never trained on, for the reference (default:
    each training picture against the others). sheet: a PNG of the `worst` most copy-like samples, each beside
    its nearest training picture. Returns the figures and those cases (sample and nearest training item named by
    file where there are files)."""
    if sheet is not None:
        sheet = Path(sheet)
        _check_suffix(sheet, ".png")
        _check_folder(sheet.parent, sheet)
    x, names = read_pictures(samples) if isinstance(samples, (str, os.PathLike)) else (torch.as_tensor(samples), None)
    if x.ndim != 4:
        raise UnmixError(f"samples must be pictures [N, C, H, W], got shape {list(x.shape)}")
    train = dataset_pictures(against, x.shape[-1])
    reference = None if heldout is None else dataset_pictures(heldout, train.shape[-1]).data
    check = check_copies(fit_pictures(x, train.shape), train.data, reference)
    if sheet is not None:
        save_png(check.sheet(worst), sheet)
    files = train.info.get("files")
    cases = [{**c, "sample": names[c["sample"]] if names else c["sample"],
              "nearest_item": files[c["nearest_item"]] if files else c["nearest_item"]} for c in check.cases(worst)]
    return {**check.figures(), "data": against, "heldout": heldout, "worst": cases}


def _copies(samples: torch.Tensor, trained_on: str) -> dict:
    """The copy check of a model's samples against its training pictures, beside its held-out split if it has one."""
    heldout = heldout_spec(trained_on)
    reference = None if heldout is None else dataset_pictures(heldout, samples.shape[-1]).data
    return check_copies(samples, dataset_pictures(trained_on, samples.shape[-1]).data, reference).figures()


def _measured_against(model: Model, data: str | None) -> str:
    """The dataset a model's samples are measured against: the one it was trained on, or for a diffusers folder
    (whose training data unmix cannot know) the one named by data=, when its items have the model's shape."""
    trained_on = str(model.data.get("name"))
    if not trained_on.startswith("diffusers:"):
        if data is not None and data != trained_on:
            raise UnmixError(f"the model was trained on {trained_on}, not {data}; drop data= or pick another model")
        return trained_on
    if data is None:
        raise UnmixError(f"{trained_on[len('diffusers:'):]} is a diffusers folder: name the dataset to measure it "
                         "against with data= (--data)")
    check_data(data)
    side = model.shape[-1] if data.startswith(("emoji:", "folder:")) else None  # read at the model's side
    shape = tuple(load_toy(data, n=2).shape) if data in TOYS else tuple(load_dataset(data, side).shape)
    if shape != model.shape:
        raise UnmixError(f"dataset {data} gives items of shape {list(shape)}, the model makes {list(model.shape)}")
    return data


def nll(model, method: str = "auto", n: int = 256, *, steps: int = 64, trace: str = "auto", variance: str = "small",
        sigma_min: float | None = None, seed: int = 0, batch_size: int = 256, device=None, progress=None,
        data: str | None = None) -> dict:
    """Negative log-likelihood of a model on n items of its dataset (for a diffusers folder: of `data`), in bits/dim.

    Images: a seeded subset of the dataset, discrete on their levels (VLB for discrete-time models when method is
    "auto", else the dequantised ODE bound). 2-D toys: a fresh draw (held out from training), continuous, through
    the ODE; the result also holds the log-likelihood per point in nats. `progress(done, total)` sees each batch.
    """
    if method not in METHODS:
        raise UnmixError(f"unknown likelihood method {method!r}; valid: {', '.join(METHODS)}")
    if not isinstance(n, int) or n < 1:
        raise UnmixError(f"n must be an integer >= 1, got {n!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise UnmixError(f"batch_size= must be an integer >= 1, got {batch_size!r}")
    model = _model(model, device)
    model.encoder.require_pixels("the likelihood")
    name = _measured_against(model, data)
    ds = load_toy(name, n=n, seed=seed + 1) if name in TOYS else load_dataset(name)  # toys: a fresh draw
    if tuple(ds.shape) != model.shape:
        raise UnmixError(f"dataset {name} gives items of shape {list(ds.shape)}, the model expects {list(model.shape)}")
    g = torch.Generator().manual_seed(seed)
    x0 = ds.batch(torch.randperm(len(ds), generator=g)[:n])[0].to(model.device)
    levels, schedule = data_levels(ds.data), model.recipe.discrete
    if method == "auto":
        method = "vlb" if schedule is not None and levels is not None else "ode"
    lo, hi = model.recipe.sigma_range()
    lo = sigma_min if sigma_min is not None else lo
    result: dict = {"data": name, "method": method, "levels": levels}
    if levels is not None:
        result["uniform_bits_per_dim"] = uniform_bits_per_dim(levels)
    common = dict(generator=g, batch_size=batch_size, progress=progress)
    if method == "vlb":
        if schedule is None:
            raise UnmixError("the VLB needs a discrete-time model (trained with the ddpm or v recipe); use method='ode'")
        if levels is None:
            raise UnmixError(f"the VLB's decoder needs discrete data; {name} is continuous, use method='ode'")
        result.update(vlb_bits_per_dim(model.denoiser, x0, schedule, levels, variance=variance, **common))
    elif levels is not None:
        result.update(ode_bits_per_dim(model.denoiser, x0, levels, sigma_min=lo, sigma_max=hi, steps=steps,
                                       trace=trace, **common), sigma_min=lo, steps=steps)
    else:
        result.update(toy_nll(model.denoiser, x0, sigma_min=lo, sigma_max=hi, steps=steps, trace=trace, **common))
    return result


def forward_pictures(out: str | os.PathLike, image=None, data: str = "digits", index: int = 0, size: int = 64,
                     frames: int = 10, sigma_max: float = 20.0, seed: int = 0, gif=None) -> tuple[Path, Path]:
    """The forward process on one image file or dataset item (or a toy's points): OUT/strip.png and a GIF."""
    _check_folder(Path(out), Path(out) / "strip.png")
    if image is not None:
        img = read_image(image)
        if not isinstance(size, int) or size < 1:
            raise UnmixError(f"size must be an integer >= 1, got {size!r}")
        if min(img.size) < size:
            raise UnmixError(f"image {image} is {img.width}x{img.height}, smaller than size={size}; pass a smaller size")
        x0 = torch.from_numpy(pil_to_array(resize_crop(img, size)).copy()).float()[None] / 127.5 - 1
    else:
        ds = load_dataset(data)
        if not ds.is_image:
            x0 = ds.batch(torch.arange(min(len(ds), 2000)))[0]
        elif not (isinstance(index, int) and 0 <= index < len(ds)):
            raise UnmixError(f"index={index} out of range: {data} has {len(ds)} items")
        else:
            x0 = ds.batch(torch.tensor([index]))[0]
    gif = Path(gif) if gif is not None else Path(out) / "noise.gif"
    _check_suffix(gif, ".gif")
    _check_folder(gif.parent, gif)
    strip = forward_strip(x0, frames, sigma_max, seed)
    Path(out).mkdir(parents=True, exist_ok=True)
    save_png(strip, Path(out) / "strip.png")
    forward_gif(x0, gif, sigma_max, seed)
    return Path(out) / "strip.png", gif


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None) -> Path:
    """Save images [N, C, H, W] in [-1, 1] as one PNG grid (or 2-D points [N, 2] as a scatter plot)."""
    path = Path(path)
    _check_suffix(path, ".png")
    _check_folder(path.parent, path)
    img = render_batch(images, nrow)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(img, path)


def _check_suffix(path: Path, suffix: str) -> None:
    if path.suffix.lower() != suffix:
        raise UnmixError(f"{path} must end in {suffix} (it is written as a {suffix[1:].upper()} file)")
    if path.is_dir():
        raise UnmixError(f"{path} is a folder; give a file name ending in {suffix}")


def _check_folder(folder: Path, target: Path) -> None:
    """`target`'s folder exists or can be created: no part of its path is a file (checked before any work)."""
    existing = next((p for p in [folder, *folder.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UnmixError(f"cannot write {target}: {existing} is a file, not a folder")


def _model(model, device=None) -> Model:
    if isinstance(model, Model):
        return model.to(device) if device is not None else model
    if isinstance(model, (str, os.PathLike)):
        return load(model, device=device or "cpu")
    raise UnmixError(f"expected a Model or a checkpoint path, got {type(model).__name__}")


def _image(image, shape) -> tuple[torch.Tensor, tuple[int, int]]:
    if isinstance(image, (str, os.PathLike)):
        return load_image_for(image, shape)
    image = torch.as_tensor(image)
    if image.ndim != 3 or tuple(image.shape) != tuple(shape):
        raise UnmixError(f"image must be a tensor of the model's shape {list(shape)}, got {list(image.shape)}")
    if not torch.isfinite(image).all() or image.abs().max() > 1 + 1e-6:
        raise UnmixError("image values must be finite and in [-1, 1]")
    return image.float(), (shape[-1], shape[-2])
