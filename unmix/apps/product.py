"""Product photos for a listing: busy photo -> the product on clean white (*clean*), framed square (*square*), or
the same product in a newly generated scene (*scene*), all from one model trained by `unmix train --data product`.

The model (unmix.data.product_job.ProductJob) is an image-conditioned denoiser (SR3 / Palette concatenation, see
unmix.nets.unet) of four channels, x0 = [alpha, photo], trained with the photo and its GrabCut mask (unmix.data.grabcut)
as its condition and the condition dropped for a share of the draws:

- *clean* samples the alpha given the photo and composites the photo's own pixels on white through it, so the
  product's pixels are the photo's (design: a mask cannot repaint the product, and with it one model serves all
  three jobs; docs/product_photos.md);
- *scene* drops the condition and inpaints (unmix.inpaint, RePaint) the photo channels around the product with its
  pixels and the alpha known: a new background drawn from the model's (photo, alpha) distribution; the product's
  pixels are pasted back at the input's resolution, bit for bit;
- *square* centres the product on a white square; where the product is cut by the photo's frame, the missing
  border is outpainted the same way (photo and alpha unknown there) and composited on white through its alpha.

Any photo size works: it is letterboxed into the model's square frame (scaled so its long side fits, the short
side padded by repeating its edge pixels, so the padding looks like more background, not a new object), and the
results are brought back to the input's size.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from unmix.data.grabcut import grabcut_refine, with_grabcut
from unmix.errors import UnmixError
from unmix.guidance import ClassifierFreeGuidance
from unmix.samplers import sample

WHITE_TOLERANCE = 0.08  # a pixel is background when every channel is within this of white (1.0), in [-1, 1] units


def check_photo(image) -> torch.Tensor:
    """The photo as float [3, H, W] in [-1, 1] (a [1, 3, H, W] batch of one is accepted)."""
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise UnmixError(f"image= must be a float tensor [3, H, W] in [-1, 1], got {type(image).__name__}"
                         + (f" of {image.dtype}" if isinstance(image, torch.Tensor) else ""))
    if image.ndim == 4 and image.shape[0] == 1:
        image = image[0]
    if image.ndim != 3 or image.shape[0] != 3 or min(image.shape[1:]) < 2:
        raise UnmixError(f"image= must be an RGB image [3, H, W] with H, W >= 2, got shape {list(image.shape)}")
    if not torch.isfinite(image).all():
        raise UnmixError("image= holds NaN or infinite values; pass an RGB image in [-1, 1]")
    return image.clamp(-1, 1)


def letterbox(image: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """[3, H, W] -> ([3, size, size], (top, left, height, width) of the photo inside it): scaled (antialiased) so
    the long side is `size`, the short side padded on both sides by repeating the edge pixels."""
    _, h, w = image.shape
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    x = image if (nh, nw) == (h, w) else F.interpolate(image[None], size=(nh, nw), mode="bilinear",
                                                       antialias=True, align_corners=False)[0]
    top, left = (size - nh) // 2, (size - nw) // 2
    x = F.pad(x[None], (left, size - nw - left, top, size - nh - top), mode="replicate")[0]
    return x, (top, left, nh, nw)


def unletterbox(x: torch.Tensor, box: tuple[int, int, int, int], size: tuple[int, int]) -> torch.Tensor:
    """The inverse of letterbox: the photo's region of [3, S, S], resized back to (H, W)."""
    top, left, nh, nw = box
    x = x[:, top:top + nh, left:left + nw]
    if tuple(x.shape[1:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bicubic", align_corners=False)[0].clamp(-1, 1)


def check_product_model(model) -> None:
    """A loaded Model is a product model (trained by `unmix train --data product`), or one clear error."""
    data = getattr(model, "data", None) or {}
    if data.get("task") != "product" or tuple(getattr(model, "shape", ()))[:1] != (4,):
        where = getattr(model, "checkpoint", None) or "this model"
        raise UnmixError(f"{where} is not a product model (it was trained on {data.get('name', 'unknown data')!r}); "
                         "train one with unmix train --data product")


def _raw_alpha(x: torch.Tensor) -> torch.Tensor:
    """The alpha channel of [.., 4, S, S] samples in [-1, 1] -> [0, 1]."""
    return (x[..., :1, :, :].clamp(-1, 1) + 1) / 2


def _snap(a: torch.Tensor, low: float = 0.1, high: float = 0.9) -> torch.Tensor:
    """An alpha in [0, 1] with its confident ends snapped to exactly 0 and 1 (below `low`, above `high`), so the
    product's inner pixels come out as the photo's own."""
    return ((a - low) / (high - low)).clamp(0, 1)


def feather(mask: torch.Tensor) -> torch.Tensor:
    """A hard mask [1, S, S] -> an alpha with a one-pixel soft edge (3x3 average, 0.2..0.8 stretched to 0..1): real
    product edges are anti-aliased, and a hard cut-out's stair-steps against white cost SSIM
    (docs/product_photos.md)."""
    return _snap(F.avg_pool2d(mask[None].float(), 3, 1, 1, count_include_pad=False)[0], 0.2, 0.8)


MEAN_SIGMA = 80.0  # EDM's largest noise level: there the denoiser's estimate no longer depends on its noisy input
METHODS = ("mean", "sample")


def alpha(denoiser, image: torch.Tensor, size: int, *, method: str = "mean", refine: bool = True, sampler: str = "heun",
          nfe: int = 33, seed: int = 0, guidance=None, callback=None) -> torch.Tensor:
    """The product's alpha [1, H, W] in [0, 1] of a busy photo [3, H, W], by a product denoiser trained at `size`
    (D(x, sigma, cond), x = [alpha, photo], cond = the letterboxed photo and its GrabCut mask [1, 4, size, size],
    unmix.data.grabcut).

    method "mean": the model's posterior mean E[alpha | photo], its estimate at the largest noise level, where the
    noisy input carries nothing (the limit of averaging ever more samples), averaged with the same for the mirrored
    photo: one network call on a batch of two, the most likely cut-out (measured in docs/product_photos.md).
    "sample": one draw from the model's distribution of alphas (`sampler`, `nfe` calls, `seed`).
    `refine`: the alpha is snapped to the photo's edges by GrabCut seeded with it (unmix.data.grabcut.grabcut_refine)
    and given a one-pixel soft edge (`feather`); without it, the model's alpha with its ends snapped to 0 and 1.
    `guidance` is a wrapper factory (e.g. functools.partial(ClassifierFreeGuidance, scale=2.0)) or None; `callback`
    is the samplers' (step, sigma, x, x0_hat), x = [alpha, photo] at `size`."""
    if method not in METHODS:
        raise UnmixError(f"unknown method {method!r} for finding the product; valid: {', '.join(METHODS)}")
    image = check_photo(image)
    x, box = letterbox(image, size)
    d = denoiser if guidance is None else guidance(denoiser)
    cond = with_grabcut(x[None])
    with torch.no_grad():
        if method == "sample":
            a = _raw_alpha(sample(d, (1, 4, size, size), sampler, nfe, seed=seed, cond=cond, callback=callback)[0])
        else:
            noisy, sigma = torch.zeros(2, 4, size, size), torch.full((2,), MEAN_SIGMA)
            out = d(noisy, sigma, torch.cat([cond, with_grabcut(x.flip(-1)[None])]))
            if callback is not None:
                callback(0, MEAN_SIGMA, noisy[:1], out[:1])
            a = (_raw_alpha(out[0]) + _raw_alpha(out[1]).flip(-1)) / 2
    a = feather(grabcut_refine(x, a)) if refine else _snap(a)
    return unletterbox(a, box, tuple(image.shape[1:])).clamp(0, 1)


def on_white(image: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The photo composited on white through alpha a: 1 (1 - a) + image a (where a = 1: the photo's pixels)."""
    return torch.where(a >= 1, image, 1 + a * (image - 1))


def product_mask(a: torch.Tensor) -> torch.Tensor:
    """The product's binary mask (alpha > 0.5), or "no product found" when it is empty."""
    m = a > 0.5
    if not bool(m.any()):
        raise UnmixError("no product found: the model sees no object in the photo (its mask is empty)")
    return m


def clean(denoiser, image: torch.Tensor, size: int, **options) -> torch.Tensor:
    """Busy photo [3, H, W] -> the product on white [3, H, W], both in [-1, 1] (options: those of `alpha`)."""
    image = check_photo(image)
    a = alpha(denoiser, image, size, **options)
    product_mask(a)
    return on_white(image, a)


def _fill(denoiser, y: torch.Tensor, unknown: torch.Tensor, *, nfe: int, seed: int, callback=None) -> torch.Tensor:
    """[alpha, photo] [4, S, S] completed where `unknown` [4, S, S] by the product model with its condition
    dropped (the unconditional model of (alpha, photo) pairs), RePaint (Lugmayr et al. 2022) resampling."""
    from unmix.inpaint import inpaint

    with torch.no_grad():
        return inpaint(denoiser, y, unknown, 1, method="repaint", sampler="heun", nfe=nfe, seed=seed,
                       callback=callback)[0].clamp(-1, 1)


def check_backdrop_model(model) -> None:
    """A loaded Model can draw scene backdrops: square RGB images, no image condition (e.g. `unmix train --data
    backgrounds`, or any unconditional or text model of a user's own scenes), or one clear error."""
    shape = tuple(getattr(model, "shape", ()))
    net = (model.config().get("net") or {}) if hasattr(model, "config") else {}
    if len(shape) != 3 or shape[0] != 3 or shape[1] != shape[2] or net.get("cond_channels"):
        where = getattr(model, "checkpoint", None) or "this model"
        raise UnmixError(f"{where} cannot draw backdrops: it must be a model of square RGB images without an image "
                         f"condition (e.g. unmix train --data backgrounds), got one of shape {list(shape)}"
                         + (" with an image condition" if net.get("cond_channels") else ""))


def scene(denoiser, image: torch.Tensor, size: int, *, backdrop=None, prompt: str | None = None, method: str = "mean",
          refine: bool = True, seed: int = 0, nfe: int = 20, clean_nfe: int = 33, guidance=None,
          callback=None) -> torch.Tensor:
    """The photo's product, its pixels unchanged, in a new background drawn around it (inpainting with the
    product's pixels known); [3, H, W] at the input's size.

    `backdrop`: a loaded Model of backgrounds (see check_backdrop_model) draws the new background at its own size,
    brought to the photo's size (softer than the product: a shallow depth of field); `prompt` steers it when that
    model is text-conditioned. None: the product model itself draws it (its backgrounds come out as coloured noise
    after the recommended training; docs/product_photos.md)."""
    if prompt is not None and (backdrop is None or not getattr(backdrop, "is_text", False)):
        raise UnmixError("prompt= needs a text-conditioned backdrop model (backdrop=, trained with --cond text on "
                         "captioned backgrounds); leave prompt=None")
    if backdrop is not None:
        check_backdrop_model(backdrop)
    image = check_photo(image)
    full = product_mask(alpha(denoiser, image, size, method=method, refine=refine, nfe=clean_nfe, seed=seed,
                              guidance=guidance, callback=callback))
    if backdrop is not None:
        background = _draw_backdrop(backdrop, image, full, nfe=nfe, seed=seed, prompt=prompt, callback=callback)
        return torch.where(full, image, background)
    x, box = letterbox(image, size)
    m = letterbox(full.float(), size)[0] > 0.5
    y = torch.cat([m.float() * 2 - 1, x])
    out = _fill(denoiser, y, torch.cat([torch.zeros_like(m), (~m).expand(3, -1, -1)]), nfe=nfe, seed=seed,
                callback=callback)
    background = unletterbox(out[1:], box, tuple(image.shape[1:]))
    return torch.where(full, image, background)


def _draw_backdrop(backdrop, image: torch.Tensor, full: torch.Tensor, *, nfe: int, seed: int, prompt: str | None,
                   callback=None) -> torch.Tensor:
    """A new background [3, H, W] for `image` by the backdrop model, at its size: inpainted (RePaint) around the
    pixels that are wholly product there, so the scene continues from the product's edges; drawn freely when the
    product is too small to cover one of its pixels."""
    side = backdrop.shape[-1]
    x, box = letterbox(image, side)
    known = letterbox(full.float(), side)[0] > 0.999
    prompts = None if prompt is None else [prompt]
    with torch.no_grad():
        if bool(known.any()):
            out = backdrop.inpaint(x, (~known).expand(3, -1, -1), n=1, seed=seed, prompts=prompts, method="repaint",
                                   sampler="heun", nfe=nfe, callback=callback)[0]
        else:
            out = backdrop.sample(n=1, seed=seed, prompts=prompts, sampler="heun", nfe=nfe, callback=callback)[0]
    return unletterbox(out.cpu().float(), box, tuple(image.shape[1:]))


def product_box(white: torch.Tensor, tolerance: float = WHITE_TOLERANCE) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the pixels of a white-background image [3, H, W] that are not white."""
    white = check_photo(white)
    fg = (white < 1 - tolerance).any(0)
    if not fg.any():
        raise UnmixError("no product found: the image is white everywhere (nothing differs from the background)")
    rows, cols = fg.any(1).nonzero()[:, 0], fg.any(0).nonzero()[:, 0]
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def square(white: torch.Tensor, margin: float = 0.1, tolerance: float = WHITE_TOLERANCE) -> torch.Tensor:
    """A white-background image [3, H, W] -> [3, S, S]: the product's bounding box, unscaled, centred on white with
    `margin` (a fraction of its long side) of white around it on the long side; S = long side * (1 + 2 margin)."""
    if not 0 <= margin <= 1:
        raise UnmixError(f"margin= must be between 0 and 1 (a fraction of the product's size), got {margin!r}")
    white = check_photo(white)
    top, left, h, w = product_box(white, tolerance)
    side = max(h, w) + 2 * round(max(h, w) * margin)
    out = torch.ones(3, side, side, dtype=white.dtype)
    t, lft = (side - h) // 2, (side - w) // 2
    out[:, t:t + h, lft:lft + w] = white[:, top:top + h, left:left + w]
    return out


def square_photo(denoiser, image: torch.Tensor, size: int, *, margin: float = 0.1, method: str = "mean",
                 refine: bool = True, seed: int = 0, nfe: int = 20, clean_nfe: int = 33, border: float = 0.25,
                 guidance=None, callback=None) -> torch.Tensor:
    """Busy photo [3, H, W] -> the product on a white square (see `square`). When the product touches the photo's
    frame it is taken to be cut by it: the photo is framed by `border` (a fraction of its long side) of unknown
    pixels on every side, made square, and the model outpaints photo and alpha there (condition dropped) before
    the whole is composited on white and squared."""
    if not 0 <= margin <= 1:
        raise UnmixError(f"margin= must be between 0 and 1 (a fraction of the product's size), got {margin!r}")
    image = check_photo(image)
    a = alpha(denoiser, image, size, method=method, refine=refine, nfe=clean_nfe, seed=seed, guidance=guidance,
              callback=callback)
    m = product_mask(a)[0]
    if not bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any()):
        return square(on_white(image, a), margin)
    photo, a, _ = outpaint_frame(denoiser, image, a, size, border=border, nfe=nfe, seed=seed, callback=callback)
    return square(on_white(photo, a), margin)


def outpaint_frame(denoiser, image: torch.Tensor, a: torch.Tensor, size: int, *, border: float = 0.25, nfe: int = 20,
                   seed: int = 0, callback=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The photo [3, H, W] and its alpha [1, H, W] framed by `border` (a fraction of the long side) on every side
    and made square, the new border outpainted by the model (photo and alpha, condition dropped): (photo
    [3, side, side], alpha [1, side, side], known [1, side, side], where the input's own pixels are)."""
    _, h, w = image.shape
    side = max(h, w) + 2 * round(border * max(h, w))
    top, left = (side - h) // 2, (side - w) // 2
    known = torch.zeros(1, side, side, dtype=torch.bool)
    known[:, top:top + h, left:left + w] = True
    canvas = torch.zeros(4, side, side)
    canvas[:1, top:top + h, left:left + w] = a * 2 - 1
    canvas[1:, top:top + h, left:left + w] = image
    y, small_known = fit(canvas, size), fit(known.float(), size) > 0.999
    out = fit(_fill(denoiser, y, (~small_known).expand(4, -1, -1), nfe=nfe, seed=seed, callback=callback), side)
    return (torch.where(known, canvas[1:], out[1:]), torch.where(known, (canvas[:1] + 1) / 2, _snap(_raw_alpha(out))),
            known)


JOBS = ("clean", "square", "scene")


def run_job(job: str, model, image: torch.Tensor, *, seed: int = 0, nfe: int | None = None, method: str = "mean",
            refine: bool = True, prompt: str | None = None, guidance: float | None = None, backdrop=None,
            callback=None) -> torch.Tensor:
    """One job of a loaded product Model on a photo [3, H, W]: "clean" (the input's size), "square" (square) or
    "scene" (the input's size, the product's pixels unchanged). `nfe` is the inpainting grid of square and scene
    (default 20) and, with method="sample", the sampling grid of the alpha (default 33); `method` is how the alpha
    is found and `refine` whether it is snapped to the photo's edges (see `alpha`). `guidance` is the
    classifier-free guidance scale on the photo when the alpha is found (None: plain conditional). `backdrop` is the
    scene job's model of backgrounds (see `scene`; None: the product model draws them). `callback` sees
    every denoiser call (step, sigma, x, x0_hat) with x = [alpha, photo] at the model's size, finding the product
    and then drawing."""
    if guidance is not None and not (isinstance(guidance, (int, float)) and 0 <= guidance <= 100):
        raise UnmixError(f"guidance= must be a number between 0 and 100, got {guidance!r}")
    if job not in JOBS:
        raise UnmixError(f"unknown product job {job!r}; valid: {', '.join(JOBS)}")
    check_product_model(model)
    d, size = model.denoiser, model.shape[-1]
    image = check_photo(image)
    if (prompt is not None or backdrop is not None) and job != "scene":
        raise UnmixError(f"prompt= and backdrop= are for the scene job, not {job}")
    cfg = None if guidance is None else functools.partial(ClassifierFreeGuidance, scale=float(guidance))
    if job == "clean":
        return clean(d, image, size, method=method, refine=refine, seed=seed, nfe=nfe or 33, guidance=cfg,
                     callback=callback)
    if job == "square":
        return square_photo(d, image, size, method=method, refine=refine, seed=seed, nfe=nfe or 20, guidance=cfg,
                            callback=callback)
    return scene(d, image, size, backdrop=backdrop, prompt=prompt, method=method, refine=refine, seed=seed,
                 nfe=nfe or 20, guidance=cfg, callback=callback)


def read_photo(path) -> torch.Tensor:
    """An RGB photo file (PNG, JPEG, ...; greyscale is made RGB, transparency composited on white) as [3, H, W] in
    [-1, 1]; anything that is not an image is one clear error."""
    from unmix.data.images import pil_to_array, read_image

    a = torch.from_numpy(pil_to_array(read_image(path).convert("RGB")))
    return a.float() / 127.5 - 1


def write_photo(image: torch.Tensor, path) -> None:
    """Save [3, H, W] in [-1, 1] as a PNG, atomically."""
    from unmix.data.images import save_png, to_pil

    save_png(to_pil(image.cpu()), path)


def fit(x: torch.Tensor, side: int) -> torch.Tensor:
    """A square [C, s, s] resized to [C, side, side] (antialiased when shrinking)."""
    if x.shape[-1] == side:
        return x
    return F.interpolate(x[None], size=(side, side), mode="bilinear", antialias=side < x.shape[-1], align_corners=False)[0]


__all__ = ["clean", "alpha", "scene", "square", "square_photo", "outpaint_frame", "on_white", "feather", "letterbox",
           "unletterbox", "product_box", "check_photo", "check_product_model", "check_backdrop_model",
           "run_job", "read_photo", "write_photo",
           "JOBS", "METHODS"]
