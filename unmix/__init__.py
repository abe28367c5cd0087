"""unmix: denoising diffusion models written around one denoiser interface D(x, sigma, cond) -> x0_hat.

Inpainting and editing are `model.inpaint(...)` / `model.edit(...)` (or unmix.api.inpaint / edit), so that the
modules unmix.inpaint and unmix.edit are never shadowed by functions of the same name. The API below loads on
first use (PEP 562), so `import unmix` and the `unmix` command start fast and a Ctrl-C while PyTorch loads is
still handled by the command line's entry point.
"""
from importlib import import_module

_API = {
    "Model": "unmix.model", "load": "unmix.model", "UnmixError": "unmix.errors", "list_samplers": "unmix.samplers",
    **{name: "unmix.api" for name in ("audit", "evaluate", "forward_pictures", "nll", "sample", "save_grid", "train")},
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unmix' has no attribute {name!r}")
