"""The page's tabs. A tab is one module here that defines TAB (its title, place, routes) beside an HTML fragment
of the same name (its controls and script); every module with a TAB is found and shown, so adding a tab touches
nothing else. Routes are mounted under /api/<name>/ and reach the shared state as `web_of(request)`; the page
shows a tab only while a model of its task is chosen.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from importlib.resources import files


@dataclass(frozen=True)
class Tab:
    name: str
    title: str
    order: int
    routes: list = field(default_factory=list)
    task: str = "image"  # the models it serves: "image", or "product" (product-photo models)

    @property
    def fragment(self) -> str:
        return (files(__name__) / f"{self.name}.html").read_text(encoding="utf-8")


def load_tabs() -> list[Tab]:
    """Every tab module's TAB, in page order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        tab = getattr(importlib.import_module(f"{__name__}.{info.name}"), "TAB", None)
        if isinstance(tab, Tab):
            found.append(tab)
    return sorted(found, key=lambda t: t.order)
