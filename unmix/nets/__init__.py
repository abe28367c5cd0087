"""Networks as plain nn.Modules, each rebuilt from a dataclass config stored as {"kind": ..., **fields}."""
from __future__ import annotations

import math
import types
import typing
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
    hints = typing.get_type_hints(cfg_cls)
    for name, value in config.items():
        _check_type(kind, name, value, hints[name])
    return cls(cfg_cls(**config))


def _check_type(kind: str, name: str, value, hint) -> None:
    """A setting of a config dataclass against its annotation (int, float, tuple[int, ...], optionally None), so a
    hand-edited config.json or a wrong net= value is one sentence rather than a TypeError deep in the network."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return
    base = next(t for t in options if t is not type(None))
    if typing.get_origin(base) is tuple:
        ok, what = isinstance(value, (list, tuple)) and all(_is_int(v) for v in value), "a list of integers"
    elif base is int:
        ok, what = _is_int(value), "an integer"
    elif base is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        what = "a finite number"
    elif isinstance(base, type):
        ok, what = isinstance(value, base), f"a {base.__name__}"
    else:  # an annotation without a runtime check (Literal, ...): the config's own __post_init__ checks it
        return
    if not ok:
        raise UnmixError(f"the {kind} setting {name}= must be {what}"
                         f"{' or None' if type(None) in options else ''}, got {value!r}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def net_config(net: nn.Module) -> dict:
    """The JSON-ready config dict that `build_net` turns back into this network."""
    kind = next((k for k, (cls, _) in NETS.items() if isinstance(net, cls)), None)
    if kind is None:
        raise UnmixError(f"cannot save a {type(net).__name__} as an unmix network (known: {', '.join(NETS)}); a model "
                         "read from a diffusers folder stays there")
    return {"kind": kind, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(net.config).items()}}


__all__ = ["Autoencoder", "AutoencoderConfig", "MLP", "MLPConfig", "UNet", "UNetConfig", "build_net", "net_config"]
