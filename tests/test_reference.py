"""docs/api.md and docs/cli.md are what scripts/make_reference.py writes from today's docstrings and commands.

When this fails, a docstring, a signature or a command's help changed: run `python scripts/make_reference.py`
and commit the two files with the change.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "make_reference.py"


@pytest.fixture(scope="module")
def reference():
    spec = importlib.util.spec_from_file_location("make_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_and_cli_references_match_the_code(reference):
    diffs = reference.drift(reference.rendered())
    assert not diffs, ("docs/api.md or docs/cli.md drifted from the code; run python scripts/make_reference.py\n"
                       + "\n".join(diffs))


def test_the_references_do_not_depend_on_the_terminal(reference, monkeypatch):
    files = reference.rendered()
    monkeypatch.setenv("COLUMNS", "37")
    assert reference.rendered() == files
    text = "".join(files.values())
    assert " at 0x" not in text and str(Path.home()) not in text


def test_the_references_cover_the_public_api_and_every_command(reference):
    import typer

    import unmix
    from unmix.cli.commands import app

    files = reference.rendered()
    api, cli = files[reference.API_MD], files[reference.CLI_MD]
    for name in unmix.__all__:
        assert f"`unmix.{name}`" in api
    for name in ("unmix.api.train", "unmix.Model.sample", "unmix.samplers.sample", "unmix.encoders.Encoder",
                 "unmix.metrics.evaluate"):
        assert f"`{name}`" in api

    def names(command, prefix):
        yield prefix
        for sub_name, sub in getattr(command, "commands", {}).items():
            yield from names(sub, f"{prefix} {sub_name}")

    for name in names(typer.main.get_command(app), "unmix"):
        assert f"`{name}`" in cli, f"{name} is missing from docs/cli.md"
