"""Read a local diffusers folder (a DDPMPipeline / DDIMPipeline folder, or a bare UNet2DModel) as an unmix model.

A diffusers VP model is an unmix model once three facts are read from its folder:

    scheduler_config.json   betas -> a DiscreteSchedule (float64): sigma_t = sqrt((1 - abar_t) / abar_t)
                            prediction_type epsilon / v_prediction / sample -> parameterisation eps / v / x0
    unet/config.json        the network, built with diffusers' UNet2DModel.from_config
    *.safetensors           its weights (single, sharded with an index, or a .fp16 variant), read in memory

The UNet sees what a diffusers scheduler would feed it: the VP input x / sqrt(1 + sigma^2) and the
(fractional) timestep t with sigma(t) = sigma, so unmix's DDPM and DDIM samplers on the pipeline's own
timesteps reproduce DDPMPipeline and DDIMPipeline, and every other unmix sampler, guidance, inpainting
and likelihood runs on the same network. The scheduler's clip_sample / thresholding (applied by diffusers
to its x0 prediction) is applied to the denoiser output, which is where unmix keeps x0_hat.

Weights are read with safetensors only: a folder with nothing but pickle (.bin) files is refused,
because unpickling a file can run code.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from unmix.adapters.weights import read_json, read_weights, weight_files
from unmix.denoiser import NetworkDenoiser
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.schedules import F64, DiscreteSchedule, append_zero, cosine_betas, linear_betas

PREDICTIONS = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid")
# Scheduler settings that describe the trained model (the rest of a scheduler config only tunes its sampler), with
# the values taken when a config lacks them (clip_sample: only DDPM/DDIM-style schedulers have it).
SCHEDULE_KEYS = {
    "num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
    "trained_betas": None, "prediction_type": "epsilon", "clip_sample": False, "clip_sample_range": 1.0,
    "thresholding": False, "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0,
    "timestep_spacing": "leading", "steps_offset": 0, "rescale_betas_zero_snr": False, "variance_type": "fixed_small",
}


# -- recognising a folder ---------------------------------------------------------------------------
def _is_unet_folder(path: Path) -> bool:
    try:
        return read_json(path / "config.json").get("_class_name") == "UNet2DModel"
    except UnmixError:
        return False


def is_diffusers_folder(path) -> bool:
    """True for a pipeline folder (model_index.json + unet/ + scheduler/) or a bare UNet2DModel folder."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    if (path / "model_index.json").is_file():
        return (path / "unet").is_dir() and (path / "scheduler").is_dir()
    return (path / "config.json").is_file() and _is_unet_folder(path)


# -- the schedule -------------------------------------------------------------------------------------
def parse_schedule(text: str) -> dict:
    """A schedule written as `key=value,key=value` (for a command-line flag) as a dict of JSON-like values.

    Example: "beta_schedule=scaled_linear,beta_start=0.00085,beta_end=0.012,prediction_type=v_prediction".
    """
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise UnmixError(f"schedule setting {part!r} needs the form key=value, e.g. beta_schedule=linear")
        value = value.strip()
        if value.lower() in ("true", "false"):
            out[key.strip()] = value.lower() == "true"
        elif re.fullmatch(r"[-+]?\d+", value):
            out[key.strip()] = int(value)
        else:
            try:
                out[key.strip()] = float(value)
            except ValueError:
                out[key.strip()] = value
    return out


def betas_from_config(cfg: dict) -> torch.Tensor:
    """The float64 betas a diffusers scheduler config describes (trained_betas, or beta_schedule)."""
    if cfg.get("trained_betas") is not None:
        betas = torch.as_tensor(cfg["trained_betas"], dtype=F64).reshape(-1)
    else:
        T, kind = int(cfg["num_train_timesteps"]), cfg["beta_schedule"]
        lo, hi = float(cfg["beta_start"]), float(cfg["beta_end"])
        if kind == "linear":
            betas = linear_betas(T, lo, hi)
        elif kind == "scaled_linear":  # latent diffusion: linear in sqrt(beta)
            betas = torch.linspace(lo**0.5, hi**0.5, T, dtype=F64) ** 2
        elif kind == "squaredcos_cap_v2":  # GLIDE / improved DDPM cosine, betas capped at 0.999
            betas = cosine_betas(T)
        elif kind == "sigmoid":  # GeoDiff
            betas = torch.sigmoid(torch.linspace(-6, 6, T, dtype=F64)) * (hi - lo) + lo
        else:
            raise UnmixError(f"unknown beta_schedule {kind!r}; valid: {', '.join(BETA_SCHEDULES)} (or trained_betas)")
    if betas.numel() < 2 or not bool(((betas > 0) & (betas < 1)).all()):
        raise UnmixError("the schedule's betas must be at least 2 numbers strictly between 0 and 1")
    return betas


def schedule_config(folder_config: dict | None, schedule: dict | None) -> dict:
    """The folder's scheduler settings overridden by `schedule`, on diffusers' defaults; checked."""
    if folder_config is None and schedule is None:
        raise UnmixError("a bare UNet2DModel folder has no scheduler: put its scheduler_config.json beside config.json "
                         "(what DDPMScheduler(...).save_pretrained(folder) writes), or in Python give unmix.load a "
                         "schedule dict such as {'beta_schedule': 'linear', 'prediction_type': 'epsilon'} (an empty "
                         "dict means 1000 linear betas from 1e-4 to 0.02, epsilon prediction, no clipping)")
    unknown = sorted(set(schedule or {}) - set(SCHEDULE_KEYS))
    if unknown:
        raise UnmixError(f"unknown schedule settings {unknown}; valid: {', '.join(SCHEDULE_KEYS)}")
    folder_config = folder_config or {}
    if folder_config and "beta_start" not in folder_config and "trained_betas" not in folder_config:
        raise UnmixError(f"scheduler {folder_config.get('_class_name')!r} has no betas; unmix reads variance-"
                         "preserving (beta) schedulers such as DDPMScheduler and DDIMScheduler")
    cfg = {**SCHEDULE_KEYS, **{k: v for k, v in folder_config.items() if k in SCHEDULE_KEYS}, **(schedule or {})}
    if cfg["prediction_type"] not in PREDICTIONS:
        raise UnmixError(f"unknown prediction_type {cfg['prediction_type']!r}; valid: {', '.join(PREDICTIONS)}")
    if cfg["rescale_betas_zero_snr"]:
        raise UnmixError("rescale_betas_zero_snr=True gives the last timestep infinite noise, which a sigma schedule "
                         "cannot hold; unmix reads schedules with rescale_betas_zero_snr=False")
    if cfg["timestep_spacing"] not in ("leading", "trailing", "linspace"):
        raise UnmixError(f"unknown timestep_spacing {cfg['timestep_spacing']!r}; valid: leading, trailing, linspace")
    return cfg


@dataclass
class DiffusersRecipe(Recipe):
    """A Recipe whose discrete schedule is any betas table, with the scheduler's x0 clipping / thresholding.

    It samples, guides and measures like any unmix Recipe (same sigma_range, sample_sigma and loss);
    `pipeline_sigmas(n)` is the grid a DDPM/DDIM pipeline with n steps walks.
    """

    betas: tuple[float, ...] = ()
    clip_sample: float | None = None  # clamp x0_hat to [-c, c] (diffusers' clip_sample / clip_sample_range)
    threshold: tuple[float, float] | None = None  # (ratio, max): Imagen's dynamic thresholding of x0_hat
    timestep_spacing: str = "leading"
    steps_offset: int = 0

    def __post_init__(self):
        self._schedule = DiscreteSchedule(torch.tensor(self.betas, dtype=F64), self.schedule or "custom")

    @classmethod
    def from_scheduler_config(cls, cfg: dict) -> DiffusersRecipe:
        betas = betas_from_config(cfg)
        parameterization = PREDICTIONS[cfg["prediction_type"]]
        return cls(
            name={"eps": "ddpm", "v": "v", "x0": "x0"}[parameterization], parameterization=parameterization,
            schedule="custom" if cfg.get("trained_betas") is not None else cfg["beta_schedule"],
            num_steps=len(betas), betas=tuple(betas.tolist()),
            clip_sample=float(cfg["clip_sample_range"]) if cfg["clip_sample"] and not cfg["thresholding"] else None,
            threshold=(float(cfg["dynamic_thresholding_ratio"]), float(cfg["sample_max_value"]))
            if cfg["thresholding"] else None,
            timestep_spacing=cfg["timestep_spacing"], steps_offset=int(cfg["steps_offset"]),
        )

    def denoiser(self, net: nn.Module) -> NetworkDenoiser:
        return ClippedDenoiser(net, self.parameterization, self.sigma_data, self._schedule,
                               clip=self.clip_sample, threshold=self.threshold)

    def pipeline_sigmas(self, steps: int, multistep: bool = False) -> torch.Tensor:
        """The sigmas of the timesteps a DDPM/DDIM (or Euler) scheduler with `steps` inference steps visits, then 0.
        `multistep`: as diffusers' multistep solvers (DPMSolverMultistep, UniPCMultistep) space them, which with
        'leading' and 'linspace' spacing lay out steps + 1 timesteps and drop the lowest."""
        T = self._schedule.num_steps
        if not 1 <= steps <= T - int(multistep):
            raise UnmixError(f"steps must be in [1, {T - int(multistep)}], got {steps}")
        if multistep and self.timestep_spacing != "trailing":
            ts = self._schedule.timestep_grid(steps + 1, self.timestep_spacing)[:-1]
        else:
            ts = self._schedule.timestep_grid(steps, self.timestep_spacing)
        if self.timestep_spacing == "leading":
            ts = (ts + self.steps_offset).clamp(max=T - 1)
        return append_zero(self._schedule.sigmas[ts])


class ClippedDenoiser(NetworkDenoiser):
    """A network denoiser whose x0_hat is clipped (or dynamically thresholded) as the diffusers scheduler does.

    DDPM and DDIM step from the clipped x0 (DDIM re-derives eps from it), which is what unmix's samplers
    do with any x0_hat, so the two agree step for step. Dynamic thresholding: Saharia et al. 2022 (Imagen).
    """

    def __init__(self, net, parameterization, sigma_data, schedule, clip: float | None = None,
                 threshold: tuple[float, float] | None = None):
        super().__init__(net, parameterization, sigma_data, schedule)
        self.clip, self.threshold = clip, threshold

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        d = super().forward(x, sigma, cond)
        if self.threshold is not None:
            ratio, max_value = self.threshold
            s = torch.quantile(d.flatten(1).abs().float(), ratio, dim=1).clamp(1, max_value).to(d.dtype)
            s = s.reshape(-1, *([1] * (d.ndim - 1)))
            return torch.maximum(torch.minimum(d, s), -s) / s
        if self.clip is not None:
            return d.clamp(-self.clip, self.clip)
        return d


# -- the network ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DiffusersNetConfig:
    """What unmix asks of a network's config: its classes (0 = unconditional) and whether one is 'no label'."""

    num_classes: int = 0
    null_class: bool = False


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel called the unmix way, net(x_in, c_noise, cond) -> output.

    c_noise is the (fractional) diffusers timestep; cond holds class labels for a UNet with num_class_embeds.
    unmix's "no label" is class index num_classes: with null_class=True that is the UNet's last class
    embedding (a model trained with labels dropped to it); without one, unlabelled and guided sampling
    are refused with a clear error rather than fed an index the UNet never learned.
    """

    def __init__(self, unet: nn.Module, null_class: bool = False):
        super().__init__()
        self.unet = unet
        embeds = int(unet.config.num_class_embeds or 0)
        if null_class and embeds < 2:
            raise UnmixError("null_class=True needs a UNet with num_class_embeds >= 2 (its last class is 'no label')")
        self.config = DiffusersNetConfig(embeds - 1 if null_class else embeds, null_class)
        self.in_channels = int(unet.config.in_channels)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        labels = None
        k = self.config.num_classes
        if k:
            if cond is None:
                cond = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
            labels = torch.as_tensor(cond, device=x.device).long().reshape(-1).expand(x.shape[0])
            if not self.config.null_class and bool((labels == k).any()):
                raise UnmixError(
                    "this diffusers UNet has no 'no label' class, so it cannot sample without a label or with "
                    "classifier-free guidance: pass labels= with guidance=1 (or, in Python, read it with the "
                    "null_class option of read_diffusers_folder if its last class embedding was trained as 'no label')")
        out = self.unet(x, c_noise, class_labels=labels).sample
        return out[:, : self.in_channels]  # learned-variance UNets return [mean, variance] channels


def _build_unet(config: dict) -> nn.Module:
    try:
        from diffusers import UNet2DModel
    except ImportError:
        raise UnmixError('reading a diffusers folder needs the diffusers package: pip install "unmix[diffusers]" '
                         '(in a source checkout: pip install -e ".[diffusers]")') from None
    kind = config.get("time_embedding_type", "positional")
    if kind != "positional":
        raise UnmixError(f"time_embedding_type {kind!r} is not supported; unmix reads UNets with 'positional' "
                         "timestep embeddings (the DDPM / DDIM family)")
    if config.get("class_embed_type") is not None:
        raise UnmixError(f"class_embed_type {config['class_embed_type']!r} is not supported; unmix reads UNets whose "
                         "classes are num_class_embeds (class_embed_type None)")
    return UNet2DModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})


# -- the whole folder -------------------------------------------------------------------------------
def _shape(unet_config: dict) -> list[int]:
    size = unet_config.get("sample_size")
    if size is None:
        raise UnmixError("the UNet config has no sample_size; unmix needs the image size it was trained on")
    h, w = (size, size) if isinstance(size, int) else size
    return [int(unet_config.get("in_channels", 3)), int(h), int(w)]


def _locate(path: Path) -> tuple[Path, dict | None]:
    """(the UNet folder, the scheduler config or None) of a pipeline folder or a bare UNet folder."""
    if not (path / "model_index.json").is_file():
        if not _is_unet_folder(path):
            raise UnmixError(f"{path} is not a diffusers folder (model_index.json with unet/ and scheduler/, "
                             "or a UNet2DModel config.json)")
        beside = path / "scheduler_config.json"  # what Scheduler.save_pretrained(path) writes next to the UNet
        return path, read_json(beside) if beside.is_file() else None
    index = read_json(path / "model_index.json")
    unet_entry = index.get("unet")
    if not (isinstance(unet_entry, list) and unet_entry[-1] == "UNet2DModel"):
        raise UnmixError(f"{path} is a {index.get('_class_name')} whose unet is {unet_entry}; unmix reads pipelines "
                         "with a UNet2DModel (DDPMPipeline, DDIMPipeline)")
    extra = sorted(k for k in ("vae", "vqvae", "text_encoder", "transformer") if index.get(k))
    if extra:
        raise UnmixError(f"{path} is a {index.get('_class_name')} with {', '.join(extra)}; unmix reads pixel-space "
                         "UNet pipelines (DDPMPipeline, DDIMPipeline), not latent or text-conditioned ones")
    sched = path / "scheduler" / "scheduler_config.json"
    if not sched.is_file():
        raise UnmixError(f"{path} has no scheduler/scheduler_config.json")
    return path / "unet", read_json(sched)


def read_diffusers_folder(path, schedule: dict | None = None, null_class: bool = False
                          ) -> tuple[nn.Module, DiffusersRecipe, dict]:
    """(network, recipe, data description) of a local diffusers folder, ready for unmix's Model.

    `schedule` overrides the folder's scheduler settings (keys as in scheduler_config.json, see
    SCHEDULE_KEYS); a bare UNet2DModel folder needs it unless a scheduler_config.json lies beside its
    config.json. `null_class=True` says a class-conditional UNet's last class embedding is 'no label' (what
    classifier-free guidance needs).
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UnmixError(f"diffusers folder {path} does not exist or is not a folder")
    unet_dir, folder_schedule = _locate(path)
    weight_files(unet_dir)  # a pickle-only folder is refused before anything else is asked of it
    cfg = schedule_config(folder_schedule, schedule)
    recipe = DiffusersRecipe.from_scheduler_config(cfg)
    unet_config = read_json(unet_dir / "config.json")
    unet = _build_unet(unet_config)
    try:
        unet.load_state_dict(read_weights(unet_dir))
    except RuntimeError as e:
        raise UnmixError(f"{unet_dir}: weights do not match its config.json ({str(e).splitlines()[0]})") from None
    net = DiffusersUNet(unet.eval(), null_class)
    k = net.config.num_classes
    data = {"name": f"diffusers:{path.name}", "shape": _shape(unet_config),
            "class_names": [str(i) for i in range(k)], "source": str(path)}
    return net, recipe, data


def describe_folder(path) -> tuple[list[str], bool]:
    """(lines for `unmix info`, whether the folder holds a scheduler) from the folder's configs alone."""
    path = Path(path).expanduser()
    unet_dir, folder_schedule = _locate(path)
    unet = read_json(unet_dir / "config.json")
    kind = read_json(path / "model_index.json").get("_class_name") if unet_dir != path else "bare UNet2DModel"
    keys = ("block_out_channels", "layers_per_block", "down_block_types", "num_class_embeds")
    lines = [f"checkpoint   {path} (diffusers {kind} folder)",
             "network      diffusers UNet2DModel, " + ", ".join(f"{k}={unet.get(k)}" for k in keys),
             f"data         items of shape {_shape(unet)} (the folder does not say which data it was trained on)"]
    if folder_schedule is None:
        lines.append("recipe       none: give schedule= (Python) or put a scheduler_config.json beside config.json")
    else:
        cfg = schedule_config(folder_schedule, None)
        betas = "trained_betas" if cfg["trained_betas"] is not None else f"{cfg['beta_schedule']} betas"
        lines.append(f"recipe       {PREDICTIONS[cfg['prediction_type']]} prediction, {cfg['num_train_timesteps']} "
                     f"steps of {betas}, clip_sample {cfg['clip_sample']} ({folder_schedule.get('_class_name')})")
    files = ", ".join(p.name for p in weight_files(unet_dir))
    lines.append(f"weights      {files}")
    return lines, folder_schedule is not None
