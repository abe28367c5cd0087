"""Networks as plain nn.Modules, each rebuilt from a dataclass config stored as {"kind": ..., **fields}."""
from __future__ import annotations

from dataclasses import asdict, fields

from torch import nn

from unmix.errors import UnmixError
from unmix.nets.autoencoder import Autoencoder, AutoencoderConfig
from unmix.nets.mlp import MLP, MLPConfig
from unmix.nets.unet import UNet, UNetConfig

NETS = {"unet": (UNet, UNetConfig), "mlp": (MLP, MLPConfig), "autoencoder": (Autoencoder, AutoencoderConfig)}


def build_net(config: dict) -> nn.Module:
    """Rebuild a network from its config dict (as stored in a checkpoint's config.json)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in NETS:
        raise UnmixError(f"unknown network kind {kind!r}; valid: {', '.join(NETS)}")
    cls, cfg_cls = NETS[kind]
    known = {f.name for f in fields(cfg_cls)}
    extra = sorted(set(config) - known)
    if extra:
        raise UnmixError(f"unknown {kind} settings {extra}; valid: {sorted(known)}")
    return cls(cfg_cls(**config))


def net_config(net: nn.Module) -> dict:
    """The JSON-ready config dict that `build_net` turns back into this network."""
    kind = next(k for k, (cls, _) in NETS.items() if isinstance(net, cls))
    return {"kind": kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(net.config).items()}}


__all__ = ["Autoencoder", "AutoencoderConfig", "MLP", "MLPConfig", "UNet", "UNetConfig", "build_net", "net_config"]
