"""`unmix data install NAME`: fetch a data package (today: the emoji styles' artwork) into the cache."""
from __future__ import annotations

import typer

from unmix.cli.app import app

data_app = typer.Typer(add_completion=False, rich_markup_mode=None, no_args_is_help=True,
                       help="Data packages: install the artwork that datasets such as `--styles all` draw from.")
app.add_typer(data_app, name="data")


@data_app.command()
def install(name: str = typer.Argument(..., help="What to install: emoji-styles (Twemoji, OpenMoji and Fluent "
                                               "artwork, from npm)")):
    """Fetch a data package into $XDG_CACHE_HOME/unmix (once; an installed package is kept) and draw its pictures."""
    from unmix.data.install import install as install_data

    install_data(name)
