"""The parts of a Stable Diffusion 1.x / 2.x model: diffusers' and transformers' own classes behind unmix's seams.

A `StableDiffusionPipeline.save_pretrained` folder has four parts, and each goes where unmix keeps that idea:

    unet/          UNet2DConditionModel -> the network of a NetworkDenoiser (eps or v, VP input scaling, the
                   fractional timestep of each sigma), conditioned on a TextCond's token embeddings
    scheduler/     betas and prediction_type -> a DiffusersRecipe (a sigma schedule; the solvers are unmix's)
    vae/           AutoencoderKL -> an unmix Encoder (latents = posterior mean x scaling_factor)
    text_encoder/  CLIPTextModel + tokenizer/ -> the model's text encoder: prompts -> TextCond (all 77 tokens,
                   as SD's cross-attention sees them, padding included), so prompts, negative prompts and
                   classifier-free guidance are unmix's own (unmix.guidance)

Weights are read with safetensors into memory (fp16 variants and sharded indexes too); pickles are refused.
`build_stable_diffusion` assembles a model from configs and state dicts: a diffusers folder's
(unmix.adapters.stable_diffusion) or a single-file checkpoint's after renaming its keys (unmix.adapters.sd_single_file).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from torch import nn

from unmix.adapters.diffusers_folder import DiffusersRecipe, schedule_config
from unmix.conditioning import TextCond
from unmix.encoders import LatentEncoder
from unmix.errors import UnmixError

INSTALL = 'pip install "unmix[diffusers]" (in a source checkout: pip install -e ".[diffusers]")'


def libraries():
    """(diffusers, transformers), imported on first use: they are the optional `[diffusers]` extra."""
    try:
        import diffusers
        import transformers
    except ImportError:
        raise UnmixError(f"a Stable Diffusion model needs diffusers and transformers: {INSTALL}") from None
    return diffusers, transformers


# -- weights ------------------------------------------------------------------------------------------
def read_state(files: list[Path], digest=None) -> dict[str, torch.Tensor]:
    """The tensors of safetensors files, read into memory (never mapped, never unpickled), floats as float32;
    `digest` (a hashlib object) sees the files' bytes."""
    state = {}
    for f in files:
        try:
            raw = f.read_bytes()
            if digest is not None:
                digest.update(raw)
            state.update(load_safetensors(raw))
        except (SafetensorError, OSError, ValueError) as e:
            raise UnmixError(f"{f} is not a readable safetensors file ({e})") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def _load(module: nn.Module, state: dict, where) -> nn.Module:
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}  # a buffer old files kept
    if not hasattr(module, "text_model"):  # transformers >= 5 dropped CLIPTextModel's text_model level; files keep it
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise UnmixError(f"{where}: weights do not match its config ({str(e).splitlines()[0]})") from None
    return module.eval().requires_grad_(False)


# -- the three networks -------------------------------------------------------------------------------
class SDNetConfig:
    """What unmix asks of a network's config: a text model (text_dim > 0) without classes."""

    num_classes = 0

    def __init__(self, text_dim: int):
        self.text_dim = text_dim


class SDUNet(nn.Module):
    """A UNet2DConditionModel called the unmix way, net(x_in, c_noise, cond) -> eps or v, cond a TextCond.

    SD's inpainting UNet takes more channels than it returns (9 = the latents, the mask, the masked picture's
    latents): `extra_channels` > 0, and `with_inputs(extra)` is the same UNet with those channels bound."""

    def __init__(self, unet: nn.Module, extra: torch.Tensor | None = None):
        super().__init__()
        self.unet, self.extra = unet, extra
        self.config = SDNetConfig(int(unet.config.cross_attention_dim))
        self.in_channels = int(unet.config.in_channels)
        self.extra_channels = self.in_channels - int(unet.config.out_channels)

    def with_inputs(self, extra: torch.Tensor) -> SDUNet:
        """This UNet (the same weights) with `extra` [N, extra_channels, h, w] after the latents of every call; a
        batch of k x N rows (classifier-free guidance's doubled batch) takes them k times."""
        if tuple(extra.shape[1:2]) != (self.extra_channels,):
            raise UnmixError(f"this UNet takes {self.extra_channels} channels besides the latents, got {extra.shape[1]}")
        return SDUNet(self.unet, extra)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: TextCond | None = None) -> torch.Tensor:
        if not isinstance(cond, TextCond):
            raise UnmixError("a Stable Diffusion UNet is conditioned on a prompt (a TextCond from its text encoder)")
        if self.extra_channels:
            if self.extra is None:
                raise UnmixError("this is a Stable Diffusion inpainting UNet (its input holds a mask and a masked "
                                 "picture): it draws through inpaint (unmix inpaint MODEL IMAGE --mask MASK)")
            if x.shape[0] % len(self.extra):
                raise UnmixError(f"a batch of {x.shape[0]} for the inpainting inputs of {len(self.extra)} pictures")
            extra = self.extra.to(x.device, x.dtype)
            x = torch.cat([x, extra.repeat(x.shape[0] // len(extra), 1, 1, 1)], 1)
        tokens = cond.expand(x.shape[0]).tokens.to(x.device, x.dtype)
        return self.unet(x, c_noise, encoder_hidden_states=tokens).sample


class VAEEncoder(LatentEncoder):
    """Latent diffusion through an AutoencoderKL: z = (posterior mean - shift) x scaling_factor, and back."""

    name = "sd-vae"

    def __init__(self, vae: nn.Module):
        self.vae = vae.eval().requires_grad_(False)
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.channels = int(vae.config.latent_channels)

    def encode(self, x):
        mean = self.vae.encode(x.to(self._dtype)).latent_dist.mean
        return ((mean - self.shift) * self.scaling).to(x.dtype)

    def decode(self, z):
        return self.vae.decode((z / self.scaling + self.shift).to(self._dtype)).sample.to(z.dtype)

    @property
    def _dtype(self):
        return next(self.vae.parameters()).dtype

    def latent_shape(self, image_shape):
        _, h, w = image_shape
        if h % self.factor or w % self.factor:
            raise UnmixError(f"image size {h}x{w} is not a multiple of the VAE's factor {self.factor}")
        return (self.channels, h // self.factor, w // self.factor)

    def encode_dataset(self, dataset):
        raise UnmixError("training on a Stable Diffusion VAE's latents is not supported; train with unmix's own "
                         "autoencoder (latent=)")

    def to(self, device):
        self.vae.to(device)
        return self

    def checkpoint_config(self):
        raise UnmixError("a Stable Diffusion model stays in its own files; unmix does not rewrite it as a checkpoint")


class CLIPPromptEncoder:
    """Prompts -> TextCond through a CLIP text model: last hidden states of all max_length tokens (padding
    included, mask all True: SD's UNet attends to every one), pooled = the end-of-text token's state."""

    def __init__(self, model: nn.Module, tokenizer, name: str, fingerprint: str):
        self.model, self.tokenizer, self.name, self.fingerprint = model, tokenizer, name, fingerprint
        self.max_length = int(min(tokenizer.model_max_length, model.config.max_position_embeddings))
        self.device = torch.device("cpu")

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def to(self, device) -> CLIPPromptEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def describe(self) -> dict:
        return {"name": self.name, "dim": self.dim, "max_length": self.max_length, "sha256": self.fingerprint}

    @torch.no_grad()
    def encode(self, texts: list[str]) -> TextCond:
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) for t in texts):
            raise UnmixError("encode takes a non-empty list of strings (prompts)")
        ids = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=True,
                             return_tensors="pt").input_ids.to(self.device)
        out = self.model(ids)
        tokens = out.last_hidden_state.float()
        return TextCond(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device),
                        out.pooler_output.float())


# -- assembling a model -------------------------------------------------------------------------------
def build_stable_diffusion(configs: dict, states: dict, tokenizer, scheduler: dict, schedule: dict | None,
                           source: Path, fingerprint: str):
    """(network, recipe, data, encoder, text encoder) from the parts' configs and state dicts
    (configs/states keyed unet, vae, text_encoder), a tokenizer and a scheduler config."""
    diffusers, transformers = libraries()
    recipe = DiffusersRecipe.from_scheduler_config(schedule_config(scheduler, schedule))
    plain = {k: {key: v for key, v in c.items() if not key.startswith("_")} for k, c in configs.items()}
    unet = _load(diffusers.UNet2DConditionModel.from_config(plain["unet"]), states["unet"], f"{source} unet")
    vae = _load(diffusers.AutoencoderKL.from_config(plain["vae"]), states["vae"], f"{source} vae")
    text_config = transformers.CLIPTextConfig(**plain["text_encoder"])
    text = _load(transformers.CLIPTextModel(text_config), states["text_encoder"], f"{source} text_encoder")
    if int(unet.config.cross_attention_dim) != int(text_config.hidden_size):
        raise UnmixError(f"{source}: the UNet attends to {unet.config.cross_attention_dim}-wide text, the text "
                         f"encoder gives {text_config.hidden_size}; the parts are from different models")
    encoder = VAEEncoder(vae)
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else size
    data = {"name": f"stable-diffusion:{source.name}", "shape": [int(vae.config.in_channels), h * encoder.factor,
            w * encoder.factor], "class_names": [], "source": str(source)}
    prompts = CLIPPromptEncoder(text, tokenizer, f"{source.name}/text_encoder", fingerprint)
    return SDUNet(unet), recipe, data, encoder, prompts
