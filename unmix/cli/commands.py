"""Every command module, imported once so that each registers its commands on the shared app."""
from unmix.cli import control_cmd, demo, eval_cmd, sample_cmd, serve_cmd, synth_cmd, train_cmd  # noqa: F401
from unmix.cli.app import app

__all__ = ["app"]
