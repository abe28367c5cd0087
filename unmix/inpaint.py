"""Inpainting: fill in the masked pixels of an image so that they agree with the known ones.

`mask` is True (1, white in a mask PNG) where the model fills in and False where the image is kept.

replace (Sohl-Dickstein et al. 2015): a denoiser wrapper whose x0_hat carries the observation on
    the known pixels. Any sampler then keeps the known pixels of x_sigma at y + sigma * z, the
    forward-noised original, at every step (exactly so for the ODE samplers, in distribution for
    the stochastic ones), while the unknown pixels follow the model.
repaint (Lugmayr et al. 2022): the same wrapper, but the grid is walked in segments of `jump`
    steps; after each segment the state is re-noised up to the segment's start,
    x_up = x + sqrt(s_up^2 - s^2) z, and the segment is sampled again, `repeats` times in all.
    This lets the unknown pixels absorb what the known ones say, at `repeats` times the NFE.
guided (reconstruction guidance, Ho et al. 2022, "Video Diffusion Models"; the likelihood
    approximation of Song et al. 2023, Pi-GDM): replace, plus a correction of the unknown pixels of
    x0_hat by the gradient of how badly x0_hat(x_sigma) misses the observation (see `Reconstruction`).
    Each call runs the network forward and backward; it is counted as 2 NFE.
guided_repaint: RePaint's resampling schedule with the guided denoiser: the resampling corrects what
    the guidance's Gaussian approximation gets wrong, at `repeats` times the cost of guided.

All end by pasting the observation, so known pixels come out exactly as given.
`exact_conditional` gives the true answer for a Gaussian mixture, to measure both against.
"""
from __future__ import annotations

import math

import torch

from unmix import rng
from unmix.analytic import GaussianMixture
from unmix.control import denoiser_and_range, generator_for, image_batch
from unmix.denoiser import CountingDenoiser, as_denoiser, expand_like, sigma_batch
from unmix.errors import UnmixError
from unmix.samplers import DEFAULT_SAMPLER, default_sigmas, get_sampler

METHODS = ("replace", "repaint", "guided", "guided_repaint")
SIGMA_DATA = 0.5  # the data std the guidance scale assumes when the denoiser does not say (images in [-1, 1])


def check_mask(mask, image_shape) -> torch.Tensor:
    """A bool mask broadcastable to one image [C, H, W], with both known and unknown pixels."""
    mask = torch.as_tensor(mask).bool()
    try:
        full = torch.broadcast_to(mask, tuple(image_shape))
    except RuntimeError:
        raise UnmixError(f"mask of shape {list(mask.shape)} does not fit an image of shape {list(image_shape)}") from None
    if bool(full.all()):
        raise UnmixError("the mask has no known pixels (all white): nothing to condition on; use `unmix sample`")
    if not bool(full.any()):
        raise UnmixError("the mask has no pixels to fill in (all black): mark them white")
    return mask


class KnownPixels:
    """Denoiser wrapper for inpainting: x0_hat with the known pixels set to the observation y."""

    def __init__(self, denoiser, image: torch.Tensor, mask: torch.Tensor):
        self.denoiser, self.image, self.mask = denoiser, image, mask
        self.event_shape = getattr(denoiser, "event_shape", None)

    def __call__(self, x, sigma, cond=None):
        d = self.denoiser(x, sigma, cond)
        return torch.where(self.mask.to(x.device), d, self.image.to(x.device, d.dtype))


class Reconstruction:
    """Denoiser wrapper for reconstruction guidance: x0_hat(x, sigma) corrected towards the observation.

    The exact conditional denoiser is E[x0 | x_sigma, y] = x0_hat + sigma^2 grad_x log p(y | x_sigma)
    (Tweedie's formula applied to p(x_sigma | y)). With p(x0 | x_sigma) taken as Gaussian around x0_hat
    with variance r^2 = sigma^2 sd^2 / (sigma^2 + sd^2) (exact for data N(0, sd^2 I)),
    log p(y | x_sigma) ~ -||m (y - x0_hat(x_sigma))||^2 / (2 r^2), m the known pixels, so

        x0_corr = x0_hat - weight * (sigma^2 + sd^2) / (2 sd^2) * grad_x ||m (x0_hat(x) - y)||^2.

    weight = 1 is that approximation; Ho et al. found larger weights better. The gradient needs autograd
    through the denoiser: one forward and one backward pass per call (counted as 2 NFE by `nfe`). The
    known pixels of the result are the observation, as in KnownPixels.
    """

    def __init__(self, denoiser, image: torch.Tensor, mask: torch.Tensor, weight: float,
                 sigma_data: float | None = None):
        self.denoiser, self.image, self.mask = denoiser, image, mask
        # a network denoiser knows the data std it was trained for (train --sigma-data); use it
        self.weight = weight
        self.sigma_data = sigma_data or getattr(denoiser, "sigma_data", None) or SIGMA_DATA
        self.event_shape = getattr(denoiser, "event_shape", None)
        self.calls = 0

    @property
    def nfe(self) -> int:
        """Forward plus backward passes so far (a backward costs about one to two forwards in time)."""
        return 2 * self.calls

    def __call__(self, x, sigma, cond=None):
        self.calls += 1
        mask = self.mask.to(x.device)
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            d = self.denoiser(xg, sigma, cond)
            y = self.image.to(x.device, d.dtype)
            miss = torch.where(mask, torch.zeros_like(d), d - y).pow(2).sum()
            (grad,) = torch.autograd.grad(miss, xg)
        s2 = expand_like(sigma_batch(sigma, x), x).to(d.dtype) ** 2
        sd2 = self.sigma_data**2
        corrected = d.detach() - self.weight * (s2 + sd2) / (2 * sd2) * grad.to(d.dtype)
        return torch.where(mask, corrected, y)


@torch.no_grad()
def inpaint(
    model,
    image: torch.Tensor,
    mask,
    n: int | None = None,
    *,
    method: str = "repaint",
    sampler: str = DEFAULT_SAMPLER,
    nfe: int = 20,
    jump: int = 5,
    repeats: int = 4,
    sigmas: torch.Tensor | None = None,
    generator: rng.Generators = None,
    seed: int | None = None,
    cond=None,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    weight: float = 1.0,
    return_nfe: bool = False,
    **options,
):
    """n completions of `image` [C, H, W] (or one per row of [n, C, H, W]) where `mask` is True.

    `model` is a loaded Model or any denoiser (see control.denoiser_and_range for the sigma range used).

    `nfe` sets the sampler's grid (`sigmas` overrides it); repaint walks it `repeats` times per
    segment, so its total NFE is about repeats * nfe, plus one call per re-noised segment (see
    `_descend`). guided walks the grid once with reconstruction guidance of strength `weight`; each of
    its calls is a forward and a backward pass, counted as 2 NFE; guided_repaint walks it as repaint
    does, with guided calls. Returns [n, C, H, W] (and the NFE used when return_nfe).
    """
    _check_settings(method, jump, repeats, weight)
    generator = generator_for(seed, generator)
    y = image_batch(image, n)
    mask = check_mask(mask, y.shape[1:])
    denoiser, sigma_min, sigma_max = denoiser_and_range(model, sigma_min, sigma_max)
    denoiser = as_denoiser(denoiser)
    spec = get_sampler(sampler)
    if sigmas is None:
        sigmas = default_sigmas(sampler, nfe, sigma_min, sigma_max)
    grid = torch.as_tensor(sigmas, dtype=torch.float64)
    if method in ("guided", "guided_repaint"):
        counter = Reconstruction(denoiser, y, mask, weight)
    else:
        counter = CountingDenoiser(KnownPixels(denoiser, y, mask))
    z = rng.randn(y.shape, generator, y.dtype, y.device)
    x = torch.where(mask, 0, y) + float(grid[0]) * z  # the known pixels start forward-noised
    run = dict(cond=cond, generator=generator, **options)
    if method in ("replace", "guided"):
        x = spec.fn(counter, x, grid, **run)
    else:
        x = _repaint(spec.fn, counter, x, grid, jump, repeats, run)
    out = torch.where(mask, x, y.to(x.dtype))
    return (out, counter.nfe) if return_nfe else out


def _repaint(fn, denoiser, x, grid, jump: int, repeats: int, run: dict):
    """RePaint's walk (Lugmayr et al. 2022): the grid in segments of `jump` steps, each descended `repeats` times,
    re-noised back to its top in between (the final segment, into sigma = 0, once)."""
    generator = run["generator"]
    for start in range(0, len(grid) - 1, jump):
        seg = grid[start: start + jump + 1]
        times = repeats if float(seg[-1]) > 0 else 1
        top = x
        for r in range(times):
            x = _descend(fn, denoiser, top, seg, run)
            if r < times - 1:
                up = math.sqrt(float(seg[0]) ** 2 - float(seg[-1]) ** 2)
                top = x + up * rng.randn(x.shape, generator, x.dtype, x.device)
    return x


def _check_settings(method: str, jump: int, repeats: int, weight: float) -> None:
    if method not in METHODS:
        raise UnmixError(f"unknown inpainting method {method!r}; valid: {', '.join(METHODS)}")
    if jump < 1 or repeats < 1:
        raise UnmixError(f"repaint needs jump >= 1 and repeats >= 1, got jump={jump}, repeats={repeats}")
    if not (math.isfinite(weight) and weight >= 0):
        raise UnmixError(f"the guidance weight must be a finite number >= 0, got {weight}")


def _descend(fn, denoiser, x, seg, run):
    """Run sampler `fn` from seg[0] down to seg[-1].

    Samplers walk grids that end at sigma = 0, so a segment ending above 0 is run as seg + [0] and
    the state at seg[-1] is kept: the input of the last denoiser call at that level (for Heun, the
    corrected point). That final call is the one evaluation this costs beyond the segment itself.
    """
    if float(seg[-1]) == 0:
        return fn(denoiser, x, seg, **run)
    stop = float(seg[-1])
    seen = {}

    def record(x_in, sigma, cond=None):
        if bool((sigma == torch.tensor(stop, dtype=sigma.dtype)).all()):
            seen["x"] = x_in
        return denoiser(x_in, sigma, cond)

    fn(record, x, torch.cat([seg, seg.new_zeros(1)]), **run)
    return seen["x"]


def holdout_split(n: int, fraction: float = 0.1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, held-out indices): a fixed `fraction` of n items kept out of training, so that
    completing held-out images measures generalisation, not recall. Same seed, same split, everywhere."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = round(n * fraction)
    return order[k:].sort().values, order[:k].sort().values


def exact_conditional(mixture: GaussianMixture, image: torch.Tensor, mask) -> GaussianMixture:
    """The exact distribution of the masked coordinates given the known ones, for a diagonal mixture.

    With diagonal components the unknown coordinates are independent of the known ones within a
    component, so the conditional is the mixture of the components' unknown parts re-weighted by
    how well each explains the observation: w_k' ~ w_k N(y_known; mu_k,known, v_k,known).
    Coordinates are the flattened positions where mask is True.
    """
    mask = check_mask(mask, mixture.event_shape).expand(mixture.event_shape).reshape(-1)
    y = torch.as_tensor(image, dtype=mixture.means.dtype).reshape(-1)
    var = mixture.variances[:, None].expand_as(mixture.means) if mixture.isotropic else mixture.variances
    known = ~mask
    vk, mk = var[:, known], mixture.means[:, known]
    loglik = -0.5 * (((y[known] - mk) ** 2) / vk + torch.log(2 * math.pi * vk)).sum(1)
    w = torch.softmax(mixture.weights.log() + loglik, 0)
    return GaussianMixture(w, mixture.means[:, mask], var[:, mask], labels=mixture.labels, dtype=mixture.means.dtype)
