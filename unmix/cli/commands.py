"""Every command module, imported once so that each registers its commands on the shared app."""
from unmix.cli import (  # noqa: F401
    audit_cmd,
    control_cmd,
    data_cmd,
    demo,
    distill_cmd,
    eval_cmd,
    latent_cmd,
    product_cmd,
    sample_cmd,
    serve_cmd,
    synth_cmd,
    train_cmd,
)
from unmix.cli.app import app

__all__ = ["app"]
