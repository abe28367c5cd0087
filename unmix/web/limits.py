"""What one request may ask of a shared machine, and reading a request's fields within those bounds."""
from __future__ import annotations

import math
from dataclasses import dataclass

from unmix.errors import UnmixError


@dataclass(frozen=True)
class Limits:
    """Bounds on every request: sampling work, batch, uploads, queue and time."""

    max_nfe: int = 200  # sampler grid size
    max_calls: int = 1000  # denoiser calls of one request (RePaint walks its grid `repeats` times)
    max_count: int = 64  # images per request
    max_upload_bytes: int = 8 * 2**20
    max_upload_side: int = 8192  # pixels along either side of an uploaded image
    max_upload_pixels: int = 16_000_000  # decoded as RGBA at most 64 MB
    max_photo_pixels: int = 4_000_000  # product photos, which come back at their own size
    uploads: int = 2  # uploads decoded at once
    max_body_bytes: int = 2 * 2**20  # JSON requests (they carry images at the model's size only)
    max_model_side: int = 512  # larger models are not served
    max_frames: int = 100  # frames of the forward path
    jobs: int = 1  # sampling requests computed at once; the others wait in a queue
    max_waiting: int = 64  # requests waiting beyond this are turned away ("busy")
    max_seconds: float = 600.0  # one request's compute time


class Fields:
    """A request's JSON fields, each read with a default and checked against its bounds (UnmixError if not)."""

    def __init__(self, body: dict):
        if not isinstance(body, dict):
            raise UnmixError("the request body must be a JSON object")
        self.body = body

    def get(self, name: str, default=None):
        value = self.body.get(name)
        return default if value is None or value == "" else value

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, default)
        try:
            number = int(value)
            ok = number == float(value)
        except (TypeError, ValueError, OverflowError):
            ok = False
        if not ok or not lo <= number <= hi:
            raise UnmixError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
        return number

    def float(self, name: str, default: float | None, lo: float, hi: float) -> float | None:
        value = self.get(name, default)
        if value is None:
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and lo <= number <= hi):
            raise UnmixError(f"{name} must be a number from {lo:g} to {hi:g}, got {value!r}")
        return number

    def choice(self, name: str, default: str, options) -> str:
        value = self.get(name, default)
        if value not in options:
            raise UnmixError(f"unknown {name} {value!r}; valid: {', '.join(options)}")
        return value

    def text(self, name: str, default: str | None = None, max_len: int = 200) -> str | None:
        value = self.get(name, default)
        if value is not None and (not isinstance(value, str) or len(value) > max_len):
            raise UnmixError(f"{name} must be a string of at most {max_len} characters")
        return value
