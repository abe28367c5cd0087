"""A progress bar that appears only once work has started, so that an error found first stays one line."""
from __future__ import annotations

from tqdm import tqdm


class LazyBar:
    """Call it as a sampler callback (any arguments) or with `advance(k)`; tqdm is created on the first tick."""

    def __init__(self, desc: str, total: int | None = None, unit: str = "eval"):
        self.desc, self.total, self.unit, self.bar = desc, total, unit, None

    def advance(self, k: int = 1) -> None:
        if self.bar is None:
            self.bar = tqdm(total=self.total, desc=self.desc, unit=self.unit, leave=False, dynamic_ncols=True)
        self.bar.update(k)

    def __call__(self, *args) -> None:
        self.advance(1)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()
