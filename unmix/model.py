"""A Model: a network, the recipe it was trained with, its encoder and a description of its data, saved and loaded
as a pair.

    model = unmix.load("runs/digits")            # a checkpoint folder, or a run folder (its latest checkpoint)
    images = model.sample(16, seed=0)             # [16, 1, 8, 8] in [-1, 1]
    model.save("my-digits")                       # a folder `load` reads back: same images, bit for bit

`model.denoiser` is the plain D(x, sigma, cond) that samplers, guidance and metrics consume. `sample`,
`inpaint` and `edit` compose labels, classifier-free guidance and per-sample seeds the same way, so sample
i depends only on its own seed. The folder format is the trainer's checkpoint (see unmix.store.checkpoint).
"""
from __future__ import annotations

import operator
import os
from pathlib import Path

import torch
from torch import nn

from unmix import encoders
from unmix.adapters import sd_inpaint
from unmix.adapters.diffusers_folder import is_diffusers_folder, read_diffusers_folder
from unmix.adapters.stable_diffusion import is_stable_diffusion, read_stable_diffusion
from unmix.conditioning import NULL_CAPTION, TextCond
from unmix.distributed import pick_device
from unmix.encoders import Encoder, encoder_of
from unmix.errors import UnmixError
from unmix.guidance import steer
from unmix.losses import Recipe
from unmix.nets import build_net, net_config
from unmix.rng import generators_from_seeds
from unmix.samplers import sample, sampling_defaults
from unmix.store import checkpoint as ckpt
from unmix.text.encoder import load_text_encoder


class Model:
    """A trained network, its recipe and a description of its data (shape, class names)."""

    def __init__(self, net: nn.Module, recipe: Recipe, data: dict, checkpoint: Path | None = None,
                 sampling: dict | None = None, encoder: Encoder | None = None, text_encoder=None):
        self.net, self.recipe, self.data, self.checkpoint = net.eval(), recipe, dict(data), checkpoint
        # what the net works on (unmix.encoders): pixels, or an autoencoder's latents; `shape` is always the images'
        self.encoder = encoder or Encoder()
        self.sampling = dict(sampling or {})  # the model's own default sampler / nfe (e.g. a distilled model's)
        self._encoder = text_encoder  # a text model's frozen encoder: given (SD's CLIP), else loaded on the first prompt
        self._denoiser = None  # (net, recipe, denoiser): see `denoiser`

    @property
    def denoiser(self):
        """The same object while net and recipe stay, so what samplers cache on it (the pilot's 3-step grid) lasts
        as long as the model."""
        if self._denoiser is None or self._denoiser[0] is not self.net or self._denoiser[1] is not self.recipe:
            self._denoiser = (self.net, self.recipe, self.recipe.denoiser(self.net))
        return self._denoiser[2]

    @property
    def shape(self) -> tuple[int, ...]:
        """One image's (or point's) shape as the user gives and gets it, [C, H, W] or [D]: pixels even for a latent
        model."""
        return tuple(self.data["shape"])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The shape the denoiser works on: the encoder's (an autoencoder's latents, or `shape` for pixels)."""
        return self.encoder.latent_shape(self.shape)

    @property
    def num_classes(self) -> int:
        """How many labels the network was trained on; 0 for a model that takes no labels=."""
        return int(getattr(self.net.config, "num_classes", 0))

    @property
    def class_names(self) -> list[str]:
        """The names labels= accepts besides indices (the dataset's, in index order); empty when it had none."""
        return list(self.data.get("class_names") or [])

    @property
    def is_text(self) -> bool:
        """Whether the network takes text embeddings, so that sampling wants prompts= rather than labels=."""
        return int(getattr(self.net.config, "text_dim", 0) or 0) > 0

    def text_encoder(self):
        """The frozen encoder this text model was trained with (checked by its weights' sha256)."""
        if self._encoder is None:
            info = self.data.get("text_encoder") or {}
            encoder = load_text_encoder(info.get("name"))
            if info.get("sha256") and encoder.fingerprint != info["sha256"]:
                raise UnmixError(f"the text encoder {encoder.name} is not the one this model was trained with "
                                 "(its weights differ); install the same one")
            self._encoder = encoder
        return self._encoder

    def encode_prompts(self, prompts, n: int) -> TextCond:
        """n prompts as a TextCond: one string for all, or one per sample (each distinct prompt encoded once)."""
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        if len(prompts) != n or not all(isinstance(p, str) for p in prompts):
            raise UnmixError(f"prompts= must be one string or {n} strings, got {len(prompts)} items")
        unique = list(dict.fromkeys(prompts))
        encoded = self.text_encoder().encode(unique)
        return encoded[torch.tensor([unique.index(p) for p in prompts])]

    @property
    def device(self) -> torch.device:
        """Where the network's weights are, and so where its inputs must be."""
        return next(self.net.parameters()).device

    def to(self, device) -> "Model":
        """Move the network and its encoder to `device` (in place, like nn.Module.to); returns the model."""
        self.net.to(device)
        self.encoder.to(device)
        return self

    def config(self) -> dict:
        """What `save` writes to config.json (besides the format marker): enough to rebuild the model."""
        config = {"net": net_config(self.net), "recipe": self.recipe.to_dict(), **self.encoder.checkpoint_config(),
                  "data": self.data}
        return {**config, "sampling": self.sampling} if self.sampling else config

    def save(self, path: str | os.PathLike) -> Path:
        """Write the model as a checkpoint folder (atomically; safetensors) that `load` reads back exactly."""
        state = {k: v.detach() for k, v in self.net.state_dict().items()}
        weights = {"model": state, "ema": state, **self.encoder.checkpoint_weights()}
        return ckpt.write_folder(Path(path), self.config(), weights)

    def labels_for(self, labels, n: int) -> torch.Tensor | None:
        """Class labels as a [n] tensor: an int or class name for all, or one per sample; None = unconditional."""
        if labels is None:
            return None
        if not self.num_classes:
            raise UnmixError("this model was trained without labels; it cannot take labels= "
                             "(train a class-conditional model with cond='label')")
        if isinstance(labels, torch.Tensor):
            labels = labels.tolist()
        if isinstance(labels, (str, int, float)):
            labels = [labels] * n
        try:
            labels = list(labels)
        except TypeError:
            raise UnmixError(f"labels= must be a class index or name, or a list of one per sample, got {labels!r:.60}") from None
        out = [self._label(lab) for lab in labels]
        if len(out) != n:
            raise UnmixError(f"got {len(out)} labels for {n} samples")
        return torch.tensor(out, dtype=torch.long)

    def _label(self, lab) -> int:
        names = self.class_names
        if isinstance(lab, str) and not lab.strip().lstrip("-").isdigit():
            if lab not in names:
                raise UnmixError(f"unknown class {lab!r}; valid: {', '.join(names)}")
            return names.index(lab)
        try:
            if isinstance(lab, bool) or (isinstance(lab, float) and not lab.is_integer()):
                raise ValueError
            lab = int(lab)
        except (TypeError, ValueError):
            raise UnmixError(f"a label is a class index or name, got {lab!r}") from None
        if not 0 <= lab <= self.num_classes:
            raise UnmixError(f"label {lab} out of range: valid 0..{self.num_classes - 1} "
                             f"(or {self.num_classes} for no label)")
        return lab

    def _steered(self, n: int, labels, guidance, prompts=None, negative_prompt=None, base=None):
        """(denoiser, cond): labels or prompts and classifier-free guidance, composed the one way every method uses,
        over the model's denoiser (or `base`). A text model without prompts samples from the null caption."""
        base = self.denoiser if base is None else base
        if not self.is_text:
            if prompts is not None or negative_prompt is not None:
                raise UnmixError("this model was trained without text; prompts= needs a model trained with "
                                 "cond='text'")
            cond = self.labels_for(labels, n)
            return steer(base, cond, guidance), cond
        if labels is not None:
            raise UnmixError("this model is text-conditional: give prompts=, not labels=")
        if prompts is None:
            if guidance is not None or negative_prompt is not None:
                raise UnmixError("guidance= and negative_prompt= need prompts= to guide towards")
            return steer(base, None), self.encode_prompts(NULL_CAPTION, n)
        uncond = self.text_encoder().encode([negative_prompt or NULL_CAPTION])
        cond = self.encode_prompts(prompts, n)
        return steer(base, cond, guidance, uncond=uncond), cond

    def _seeds(self, n: int, seed: int, seeds, generator) -> list[int] | list[torch.Generator]:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise UnmixError(f"the number of samples must be an integer >= 1, got {n!r}")
        if generator is not None:
            if seeds is not None:
                raise UnmixError("pass either seeds= or generator=, not both")
            gens = [generator] * n if isinstance(generator, torch.Generator) else list(generator)
            if len(gens) != n:
                raise UnmixError(f"got {len(gens)} generators for {n} samples")
            return gens
        if seeds is None:
            if isinstance(seed, bool) or not hasattr(type(seed), "__index__"):
                raise UnmixError(f"seed= must be an integer, got {seed!r:.60}")
            seed = operator.index(seed)
            seeds = list(range(seed, seed + n))
        else:
            values = seeds.tolist() if hasattr(seeds, "tolist") else seeds
            if not isinstance(values, (list, tuple, range)) or not all(
                    isinstance(s, int) and not isinstance(s, bool) for s in values):
                raise UnmixError(f"seeds= must be a list of integers, one per sample, got {seeds!r:.60}")
            seeds = list(values)
        if len(seeds) != n:
            raise UnmixError(f"got {len(seeds)} seeds for {n} samples")
        return seeds

    @torch.no_grad()
    def sample(self, n: int = 16, seed: int = 0, seeds=None, sampler: str | None = None, nfe: int | None = None,
               labels=None, guidance: float | None = None, device=None, batch_size: int = 256, callback=None,
               generator=None, prompts=None, negative_prompt: str | None = None, **options) -> torch.Tensor:
        """n samples [n, *shape], clamped to [-1, 1]. Sample i uses seed + i (or seeds[i]), so its noise does
        not depend on n or the batch size (the sample, to the rounding of batched matmuls); `generator` (one, or
        one per sample) replaces the seeds. sampler and nfe
        default to the model's own (`sampling`, e.g. a distilled model's native step count), else auto at 32.
        `callback(step, sigma, x, x0_hat)` sees each batch's steps."""
        keys = self._seeds(n, seed, seeds, generator)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise UnmixError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        device = pick_device(str(device)) if device is not None else self.device
        self.to(device)
        denoiser, cond = self._steered(n, labels, guidance, prompts, negative_prompt)
        sampler, nfe = self.sampling_defaults(sampler, nfe)
        ends = self._grid_ends(sampler, nfe, options)
        shared = isinstance(generator, torch.Generator)
        out = []
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            gens = generator if shared else (keys[lo:hi] if generator is not None else generators_from_seeds(keys[lo:hi]))
            x = sample(denoiser, (hi - lo, *self.latent_shape), sampler, nfe, generator=gens, device=device,
                       cond=None if cond is None else cond[lo:hi].to(device), callback=self.encoder.decoding(callback),
                       **ends, **options)
            out.append(self.encoder.decode(x).float().clamp(-1, 1).cpu())
        return torch.cat(out)

    def sampling_defaults(self, sampler: str | None = None, nfe: int | None = None) -> tuple[str, int]:
        """(sampler, nfe): the ones given, else the model's own (a distilled model's), else the default."""
        return sampling_defaults(self.sampling, sampler, nfe)

    def _grid_ends(self, sampler: str, nfe: int, options: dict) -> dict:
        """How the sampler's grid meets the recipe's noise range. The model's own sampler and step count (a
        distilled model's) walk the whole range: it is the grid the model was trained on. Any other budget keeps
        the samplers' budget grid, clamped into the range. Explicit sigmas / sigma_min / sigma_max win."""
        if options.keys() & {"sigmas", "sigma_min", "sigma_max"}:
            return {}
        lo, hi = self.recipe.sigma_range()
        if self.sampling and (sampler, nfe) == (self.sampling.get("sampler"), self.sampling.get("nfe")):
            return {"sigma_min": lo, "sigma_max": hi}
        return {"sigma_limits": (lo, hi)}

    @torch.no_grad()
    def inpaint(self, image: torch.Tensor, mask, n: int = 8, seed: int = 0, labels=None,
                guidance: float | None = None, prompts=None, negative_prompt: str | None = None,
                **options) -> torch.Tensor:
        """n completions of `image` [C, H, W] where `mask` is True (see unmix.inpaint.inpaint for methods);
        completion i uses seed + i; the known pixels come back exactly."""
        if mask is None or isinstance(mask, (str, os.PathLike)):
            raise UnmixError(f"mask= must be a bool tensor, True where to fill in (unmix.inpaint also reads mask images), "
                             f"got {mask!r:.60}")
        k = self._count(n, seed, image)
        if sd_inpaint.takes_mask(self.net):  # SD's inpainting UNet: the mask and the masked picture are its input
            return _clamped(sd_inpaint.inpaint(self, image.to(self.device), mask, k, seed, labels, guidance, prompts,
                                               negative_prompt, **options))
        denoiser, cond = self._steered(k, labels, guidance, prompts, negative_prompt)
        lo, hi = self.recipe.sigma_range()
        x = encoders.inpaint(self.encoder, denoiser, image.to(self.device), mask, n, generator=self._generators(n, seed),
                             cond=None if cond is None else cond.to(self.device), sigma_min=lo, sigma_max=hi, **options)
        return _clamped(x)

    @torch.no_grad()
    def edit(self, image: torch.Tensor, strength: float, n: int = 8, seed: int = 0, labels=None,
             guidance: float | None = None, prompts=None, negative_prompt: str | None = None,
             **options) -> torch.Tensor:
        """n SDEdit edits of `image` [C, H, W] at `strength` (0 keeps it, 1 ignores it); edit i uses seed + i."""
        denoiser, cond = self._steered(self._count(n, seed, image), labels, guidance, prompts, negative_prompt)
        lo, hi = self.recipe.sigma_range()
        x = encoders.edit(self.encoder, denoiser, image.to(self.device), strength, n, generator=self._generators(n, seed),
                          cond=None if cond is None else cond.to(self.device), sigma_min=lo, sigma_max=hi, **options)
        return _clamped(x)

    def _count(self, n, seed, image) -> int:
        """n, checked with seed= and image= (a tensor; files are read by unmix.inpaint / unmix.edit)."""
        if not isinstance(image, torch.Tensor):
            raise UnmixError(f"image= must be a tensor [C, H, W] in [-1, 1] (unmix.inpaint and unmix.edit also read "
                             f"image files), got {type(image).__name__}")
        return len(self._seeds(n, seed, None, None))

    def _generators(self, n: int, seed: int) -> list[torch.Generator]:
        return generators_from_seeds(range(int(seed), int(seed) + n))


def _clamped(result):
    """Clamp images to [-1, 1] (keeping an (images, nfe) pair's count)."""
    if isinstance(result, tuple):
        return result[0].float().clamp(-1, 1).cpu(), result[1]
    return result.float().clamp(-1, 1).cpu()


def load(path: str | os.PathLike, weights: str = "ema", device: str | torch.device = "cpu",
         schedule: dict | None = None) -> Model:
    """A Model from a checkpoint folder or a training output folder (its latest checkpoint), or from a local
    diffusers folder (unmix.adapters.diffusers_folder; `schedule` overrides or, for a bare UNet2DModel, gives its scheduler),
    or a Stable Diffusion folder (unmix.adapters.stable_diffusion)."""
    device = pick_device(str(device))
    if not isinstance(path, (str, os.PathLike)):
        raise UnmixError(f"path= must be a checkpoint or run folder (a str or Path), got {path!r:.60}")
    if is_stable_diffusion(path):
        net, recipe, data, encoder, text = read_stable_diffusion(path, schedule)
        return Model(net.to(device), recipe, data, Path(path).expanduser(), encoder=encoder.to(device), text_encoder=text)
    if is_diffusers_folder(path):
        net, recipe, data = read_diffusers_folder(path, schedule)
        return Model(net.to(device), recipe, data, Path(path).expanduser())
    if schedule is not None:
        raise UnmixError(f"schedule= is for diffusers folders; {path} is not one (an unmix checkpoint keeps its own)")
    c = ckpt.open_checkpoint(path)
    if c.config["net"].get("kind") == "autoencoder":
        raise UnmixError(f"{c.path} is an autoencoder (latent diffusion's first stage), not a diffusion model; train "
                         f"one on its latents with latent={str(path)!r}")
    net, recipe = rebuild(c.config, c.path)
    try:
        net.load_state_dict(c.weights(weights))
    except RuntimeError as e:
        raise UnmixError(f"{c.path}: weights do not match the network in config.json ({str(e).splitlines()[0]})") from None
    return Model(net.to(device), recipe, c.config.get("data") or {}, c.path, c.config.get("sampling"),
                 encoder_of(c).to(device))


def rebuild(config: dict, where: Path | str = "config.json") -> tuple[nn.Module, Recipe]:
    """(network, recipe) from a checkpoint config; a hand-edited or damaged config is one clear error."""
    try:
        net = build_net(config["net"])
        recipe = Recipe.from_dict(config["recipe"])
    except UnmixError as e:
        raise UnmixError(f"{where}/config.json: {e}") from None
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise UnmixError(f"{where}/config.json has a setting of the wrong type or value ({e}); "
                         "the checkpoint is damaged") from None
    data = config.get("data")
    if data is not None and not (isinstance(data, dict) and isinstance(data.get("shape", []), list)):
        raise UnmixError(f"{where}/config.json: its 'data' section must be an object with a 'shape' list")
    return net, recipe
