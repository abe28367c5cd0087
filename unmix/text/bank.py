"""Caption embeddings computed once per dataset and cached, so training never runs the text encoder.

A dataset's captions (`Dataset.captions`: a fixed list of variants per item) are encoded once; every
distinct string is stored once (keywords such as "face" are shared by hundreds of emoji), its tokens packed
end to end without padding. Each training step then draws one variant per item with the step's generator,
drops some to the null caption for classifier-free guidance (Ho & Salimans 2022), and gathers a padded
TextCond - a table lookup, not an encoder call.

The cache file ($XDG_CACHE_HOME/unmix/text/captions-<key>.safetensors) is keyed by the encoder's weights and
the exact strings, written atomically, and rebuilt whenever it is missing, unreadable or stale. Tokens are
stored in float16 (half the size; a relative error of ~1e-3, far below what a denoiser resolves) and
returned as float32.
"""
from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load

from unmix.conditioning import NULL_CAPTION, TextCond
from unmix.store.files import cache_dir, save_safetensors
from unmix.text.captions import unique
from unmix.text.encoder import TextEncoder

VERSION = "1"
MAIN_CAPTION_WEIGHT = 0.5  # share of draws that give an item its main caption (its name); the others split the rest


class CaptionBank:
    """The embeddings of every caption variant of a dataset's items, gathered by item index.

    `strings[0]` is always the null caption "". `variants[i]` lists item i's string ids (empty: the item has no
    caption and always gets the null caption)."""

    def __init__(self, strings: list[str], tokens: torch.Tensor, offsets: torch.Tensor, pooled: torch.Tensor,
                 variants: list[list[int]]):
        if not strings or strings[0] != NULL_CAPTION:
            raise ValueError("a caption bank's first string must be the null caption")
        self.strings, self.tokens, self.offsets, self.pooled = strings, tokens, offsets, pooled
        self.variants = variants
        self._flat = torch.as_tensor([j for v in variants for j in v] or [0], dtype=torch.long)
        self._count = torch.as_tensor([len(v) for v in variants], dtype=torch.long)
        self._start = self._count.cumsum(0) - self._count

    def __len__(self) -> int:
        return len(self.variants)

    @property
    def dim(self) -> int:
        return self.tokens.shape[1]

    def to(self, device) -> CaptionBank:
        """The bank with its embeddings on `device` (index bookkeeping stays on the CPU)."""
        return CaptionBank(self.strings, self.tokens.to(device), self.offsets.to(device), self.pooled.to(device),
                           self.variants)

    def lookup(self, ids: torch.Tensor) -> TextCond:
        """TextCond for string ids [B], padded to the longest of them, float32 on the bank's device."""
        ids = torch.as_tensor(ids, dtype=torch.long).reshape(-1).to(self.offsets.device)
        start, length = self.offsets[ids], self.offsets[ids + 1] - self.offsets[ids]
        pos = torch.arange(int(length.max()), device=ids.device)
        mask = pos[None, :] < length[:, None]
        rows = torch.where(mask, start[:, None] + pos[None, :], 0)
        tokens = self.tokens[rows].float() * mask[..., None]
        return TextCond(tokens, mask, self.pooled[ids].float())

    def pick(self, items: torch.Tensor, generator: torch.Generator | None = None, p_null: float = 0.1) -> torch.Tensor:
        """String ids [B] for items [B]: one variant each - the main caption (the first) with probability
        MAIN_CAPTION_WEIGHT, else one of the others uniformly - then the null caption with probability p_null
        (and always for items without captions). Two draws of B uniforms from `generator`, in that order.

        Why not uniform: an emoji has about six variants, most of them keywords shared by many emoji ("face"
        names 135), so uniform draws show the one caption that identifies the item only one time in six."""
        items = torch.as_tensor(items, dtype=torch.long).reshape(-1).cpu()
        u = torch.rand(items.shape[0], generator=generator, dtype=torch.float64)
        drop = torch.rand(items.shape[0], generator=generator, dtype=torch.float64) < p_null
        return self.pick_with(items, u, drop)

    def pick_with(self, items: torch.Tensor, u: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
        """`pick` with its uniforms `u` [B] in [0, 1) and null-caption decisions `drop` [B] already drawn."""
        items, u, drop = items.reshape(-1).long().cpu(), u.reshape(-1).double().cpu(), drop.reshape(-1).cpu()
        count = self._count[items]
        w = MAIN_CAPTION_WEIGHT
        rest = ((u - w) / (1 - w) * (count - 1)).long() + 1  # u in [w, 1) spreads over variants 1 .. count - 1
        j = torch.where((u < w) | (count < 2), 0, rest).clamp(max=(count - 1).clamp(min=0))
        ids = self._flat[(self._start[items] + j).clamp(max=len(self._flat) - 1)]
        return torch.where(drop | (count == 0), 0, ids)

    def sample(self, items: torch.Tensor, generator: torch.Generator | None = None, p_null: float = 0.1) -> TextCond:
        """A training batch's conditioning: `lookup(pick(items, generator, p_null))`."""
        return self.lookup(self.pick(items, generator, p_null))


def _key(encoder: TextEncoder, strings: list[str]) -> str:
    h = hashlib.sha256(f"{VERSION}\n{encoder.fingerprint}\n{encoder.max_length}\n{encoder.pooling}\n"
                       f"{encoder.normalize}\n".encode())
    h.update(json.dumps(strings, ensure_ascii=False).encode("utf-8"))
    return h.hexdigest()


def _read(path, key: str, strings: list[str]) -> dict[str, torch.Tensor] | None:
    """The cached tensors if the file exists, reads cleanly and was made for exactly these strings."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if meta.get("key") != key or json.loads(meta.get("strings", "null")) != strings:
            return None
        return load(path.read_bytes())  # in memory: never a mapped file that a later writer could replace
    except (SafetensorError, OSError, ValueError):
        return None


def _encode_packed(encoder: TextEncoder, strings: list[str], batch_size: int) -> dict[str, torch.Tensor]:
    """tokens [sum of lengths, D] float16 end to end, offsets [S + 1], pooled [S, D] float32. Strings are encoded
    in batches of similar length (less padding), each row's real tokens kept."""
    order = sorted(range(len(strings)), key=lambda i: len(strings[i]))
    rows: list[torch.Tensor] = [torch.empty(0)] * len(strings)
    pooled = torch.empty(len(strings), encoder.dim)
    for b in range(0, len(order), batch_size):
        ids = order[b:b + batch_size]
        c = encoder.encode([strings[i] for i in ids], batch_size).to("cpu")
        pooled[ids] = c.pooled
        for r, i in enumerate(ids):
            rows[i] = c.tokens[r, c.mask[r]]
    offsets = torch.as_tensor([0, *[len(r) for r in rows]]).cumsum(0)
    return {"tokens": torch.cat(rows).half(), "offsets": offsets, "pooled": pooled}


def caption_bank(captions: Sequence[Sequence[str]], encoder: TextEncoder, cache: bool = True,
                 batch_size: int = 256) -> CaptionBank:
    """Embed every distinct caption variant once (from the cache when possible) and index them per item.

    `captions` is `Dataset.captions`: item i's variants; empty strings and an empty list mean the null caption."""
    per_item = [unique(v) for v in captions]
    strings = [NULL_CAPTION, *dict.fromkeys(s for v in per_item for s in v)]
    index = {s: i for i, s in enumerate(strings)}
    key = _key(encoder, strings)
    path = cache_dir() / "text" / f"captions-{key[:16]}.safetensors"
    stored = _read(path, key, strings) if cache else None
    if stored is None:
        if len(strings) > 1000:
            print(f"encoding {len(strings)} captions with {encoder.name} (cached in {path.parent})", file=sys.stderr)
        stored = _encode_packed(encoder, strings, batch_size)
        if cache:
            save_safetensors(path, stored, {"key": key, "strings": json.dumps(strings, ensure_ascii=False),
                                            "encoder": json.dumps(encoder.describe())}, make_parents=True)
    variants = [[index[s] for s in v] for v in per_item]
    return CaptionBank(strings, stored["tokens"], stored["offsets"], stored["pooled"], variants)


__all__ = ["CaptionBank", "caption_bank"]
