"""Read a Stable Diffusion 1.x / 2.x single-file checkpoint (the original CompVis / A1111 layout), offline.

    unmix.load("v1-5-pruned-emaonly.safetensors")

One .safetensors file holds the three networks under their original names: `model.diffusion_model.*` (the UNet),
`first_stage_model.*` (the VAE) and `cond_stage_model.transformer.*` (SD 1: OpenAI CLIP ViT-L) or
`cond_stage_model.model.*` (SD 2: OpenCLIP ViT-H). It carries no configs, so:

- the version is told by the UNet's cross-attention width (768: SD 1, 1024: SD 2; otherwise by the text keys), and
  9 input channels mean an inpainting UNet;
- the configs are the published ones shipped in sd_configs/ (sd1.json, sd2.json), with every size the tensors show
  (channels, layers per block, attention blocks, the text model's width / depth / vocabulary) read from them; what
  tensors cannot show keeps the published value (32 norm groups, CLIP's 64-wide heads, SD 1's 8 UNet heads, SD 2's
  64-wide UNet heads, the activations);
- an SD 2 file is read as the 768 px v-prediction model (as diffusers does); an SD 2 *base* model (512 px, epsilon)
  needs unmix.load(path, schedule={"prediction_type": "epsilon"});
- keys are renamed by diffusers' own single-file converters (diffusers.loaders.single_file_utils), given the configs
  so nothing is fetched, and the parts are built by unmix.adapters.sd_parts.build_stable_diffusion;
- the tokenizer is CLIP's BPE vocabulary from the installed open_clip wheel (bpe_simple_vocab_16e6.txt.gz), built
  the way CLIP builds it; nothing is downloaded. A `tokenizer/` folder beside the file (CLIPTokenizer.save_pretrained,
  as a diffusers repo has) is used instead: for a model with its own vocabulary (e.g. a tiny test model).

The model hash (PNG parameters' "Model hash") is the sha256 of the whole file, as A1111 computes it.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

from unmix.adapters.sd_parts import build_stable_diffusion, libraries, read_state
from unmix.adapters.weights import read_json
from unmix.errors import UnmixError

CONFIGS = Path(__file__).parent / "sd_configs"
UNET, VAE = "model.diffusion_model.", "first_stage_model."
CLIP, OPEN_CLIP = "cond_stage_model.transformer.", "cond_stage_model.model."
HEAD_WIDTH = 64  # CLIP's and OpenCLIP's text heads, and SD 2's UNet heads, are 64 wide
VOCAB_SIZE = 49408
OPEN_CLIP_HINT = "pip install --no-deps open-clip-torch (its wheel ships CLIP's BPE vocabulary; nothing else of it is used)"


def read_single_file(path: Path, schedule: dict | None = None):
    """(network, recipe, data, encoder, text encoder) of an SD 1.x / 2.x single-file .safetensors checkpoint."""
    libraries()
    from diffusers.loaders import single_file_utils as convert

    digest = hashlib.sha256()
    state = {k: v for k, v in read_state([path], digest).items() if not k.startswith("model_ema.")}
    text_prefix = _check_layout(state, path)
    unet_state = _part(state, UNET)
    version = _version(unet_state, text_prefix)
    base = read_json(CONFIGS / f"{version}.json")
    scheduler = dict(base["scheduler"])
    try:
        unet_config = _unet_config(unet_state, base["unet"], version)
        vae_config = _vae_config(_part(state, VAE), base["vae"])
    except (KeyError, IndexError, ValueError, StopIteration) as e:
        raise UnmixError(f"{path}: its UNet / VAE keys are not Stable Diffusion's layout ({e!r:.80})") from None
    if unet_config["in_channels"] == 9:  # SD's inpainting models are 512 px epsilon models, SD 2's too
        scheduler["prediction_type"] = "epsilon"
    if (schedule or {}).get("prediction_type", scheduler["prediction_type"]) == "epsilon" and version == "sd2":
        unet_config["sample_size"], vae_config["sample_size"] = 64, 512  # SD 2 base / inpainting: 512 px
    states = {"unet": convert.convert_ldm_unet_checkpoint(_part(state, UNET, strip=False), unet_config),
              "vae": convert.convert_ldm_vae_checkpoint(_part(state, VAE, strip=False), vae_config)}
    text_state = _part(state, text_prefix, strip=False)
    del state, unet_state
    text_digest = hashlib.sha256()
    for k in sorted(text_state):
        text_digest.update(k.encode() + text_state[k].numpy().tobytes())
    states["text_encoder"] = _convert_text(convert, text_state, text_prefix)
    text_base = read_json(CONFIGS / ("sd1.json" if text_prefix == CLIP else "sd2.json"))
    configs = {"unet": unet_config, "vae": vae_config,
               "text_encoder": _text_config(states["text_encoder"], text_base["text_encoder"], path)}
    tokenizer = _tokenizer(path, text_base["tokenizer"], configs["text_encoder"]["vocab_size"])
    parts = build_stable_diffusion(configs, states, tokenizer, scheduler, schedule, path, text_digest.hexdigest())
    parts[2]["sha256"] = digest.hexdigest()  # the whole file's: A1111's "Model hash"
    return parts


# -- what the file is ---------------------------------------------------------------------------------
def _check_layout(state: dict, path: Path) -> str:
    """The text encoder's key prefix; a file that is not an SD 1.x / 2.x checkpoint is one clear line."""
    what = "a Stable Diffusion 1.x / 2.x single-file checkpoint"
    if any(k.startswith("conditioner.embedders.") for k in state):
        raise UnmixError(f"{path} is an SDXL-style checkpoint (conditioner.embedders.*); unmix reads {what}")
    lacking = [name for name, prefix in (("UNet", UNET), ("VAE", VAE)) if not any(k.startswith(prefix) for k in state)]
    texts = [p for p in (CLIP, OPEN_CLIP) if any(k.startswith(p) for k in state)]
    if not texts:
        lacking.append("text encoder")
    if lacking:
        raise UnmixError(f"{path} is not {what}: it has no {' / '.join(lacking)} weights (keys {UNET}*, {VAE}*, "
                         f"{CLIP}* or {OPEN_CLIP}*)")
    return texts[0]


def _part(state: dict, prefix: str, strip: bool = True) -> dict:
    return {(k[len(prefix):] if strip else k): v for k, v in state.items() if k.startswith(prefix)}


def _version(unet: dict, text_prefix: str) -> str:
    """"sd1" or "sd2": the UNet's cross-attention width (768 / 1024), else the text encoder's kind."""
    width = next((int(v.shape[1]) for k, v in unet.items() if k.endswith("attn2.to_k.weight")), None)
    return {768: "sd1", 1024: "sd2"}.get(width, "sd1" if text_prefix == CLIP else "sd2")


# -- configs: the published ones, with the sizes the tensors show ---------------------------------------
def _indices(keys, prefix: str) -> list[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pattern.match(k))})


def _unet_config(unet: dict, base: dict, version: str) -> dict:
    """The UNet's config: levels, channels, layers per block and which blocks attend, read from its tensors."""
    inputs = _indices(unet, "input_blocks.")
    downsamples = [i for i in inputs if f"input_blocks.{i}.0.op.weight" in unet]
    levels = len(downsamples) + 1
    per = (len(inputs) - 1 - len(downsamples)) // levels
    first = [1 + level * (per + 1) for level in range(levels)]
    channels = [int(unet[f"input_blocks.{i}.0.out_layers.3.weight"].shape[0]) for i in first]
    attends = [f"input_blocks.{i}.1.proj_in.weight" in unet for i in first]
    up_attends = [f"output_blocks.{level * (per + 1)}.1.proj_in.weight" in unet for level in range(levels)]
    proj_in = next(k for k in unet if k.endswith(".proj_in.weight"))
    block = proj_in.removesuffix("proj_in.weight")
    conv_in = unet["input_blocks.0.0.weight"]
    heads = base["attention_head_dim"] if version == "sd1" else [max(1, c // HEAD_WIDTH) for c in channels]
    return {**_plain(base), "in_channels": int(conv_in.shape[1]), "out_channels": int(unet["out.2.weight"].shape[0]),
            "block_out_channels": channels, "layers_per_block": per,
            "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attends],
            "up_block_types": ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in up_attends],
            "cross_attention_dim": next(int(v.shape[1]) for k, v in unet.items() if k.endswith("attn2.to_k.weight")),
            "attention_head_dim": heads, "use_linear_projection": unet[proj_in].ndim == 2,
            "transformer_layers_per_block": len(_indices(unet, block + "transformer_blocks."))}


def _vae_config(vae: dict, base: dict) -> dict:
    """The VAE's config: channels per level, layers per block, latent and picture channels, from its tensors."""
    levels = _indices(vae, "encoder.down.")
    return {**_plain(base), "block_out_channels": [int(vae[f"encoder.down.{i}.block.0.conv1.weight"].shape[0])
                                                   for i in levels],
            "down_block_types": ["DownEncoderBlock2D"] * len(levels), "up_block_types": ["UpDecoderBlock2D"] * len(levels),
            "layers_per_block": len(_indices(vae, "encoder.down.0.block.")),
            "in_channels": int(vae["encoder.conv_in.weight"].shape[1]),
            "out_channels": int(vae["decoder.conv_out.weight"].shape[0]),
            "latent_channels": int(vae["post_quant_conv.weight"].shape[0])}


def _convert_text(convert, state: dict, prefix: str) -> dict:
    """The text encoder's weights in transformers' CLIPTextModel names (keys under text_model.)."""
    if prefix == CLIP:
        text = convert.convert_ldm_clip_checkpoint(state)
    else:  # OpenCLIP: q/k/v split at the model's width (the last block, SD 2 never reads it, is left out)
        width = state[OPEN_CLIP + "token_embedding.weight"].shape[1] if OPEN_CLIP + "token_embedding.weight" in state else 0
        text = convert.convert_open_clip_checkpoint(SimpleNamespace(config=SimpleNamespace(hidden_size=int(width))),
                                                    state, prefix=OPEN_CLIP)
        text.pop("text_projection.weight", None)  # the CLIP loss's projection: SD reads the states before it
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.items()}


def _text_config(text: dict, base: dict, path: Path) -> dict:
    """The CLIP text model's config: vocabulary, width, depth, MLP width and positions, from its tensors."""
    try:
        vocab, width = text["text_model.embeddings.token_embedding.weight"].shape
        config = {**_plain(base), "vocab_size": int(vocab), "hidden_size": int(width),
                  "num_hidden_layers": len(_indices(text, "text_model.encoder.layers.")),
                  "intermediate_size": int(text["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]),
                  "max_position_embeddings": int(text["text_model.embeddings.position_embedding.weight"].shape[0])}
    except KeyError as e:
        raise UnmixError(f"{path}: its text encoder's keys are not CLIP's layout (no {e})") from None
    if width % HEAD_WIDTH:
        raise UnmixError(f"{path}: a {width}-wide text encoder does not split into CLIP's {HEAD_WIDTH}-wide heads")
    config["num_attention_heads"] = int(width) // HEAD_WIDTH
    return config


def _plain(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


# -- the tokenizer -----------------------------------------------------------------------------------
def _tokenizer(path: Path, settings: dict, vocab_size: int):
    """A `tokenizer/` folder beside the file, else CLIP's vocabulary; it must cover the text model's."""
    _, transformers = libraries()
    folder = path.parent / "tokenizer"
    if folder.is_dir():
        try:
            tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise UnmixError(f"{folder} is not a readable CLIP tokenizer ({e})") from None
    else:
        tokenizer = clip_tokenizer(settings["pad_token"])
    if len(tokenizer) != vocab_size:
        raise UnmixError(f"{path}: its text encoder has {vocab_size} tokens, the tokenizer {len(tokenizer)}; for a "
                         "model with its own vocabulary put its tokenizer/ folder (CLIPTokenizer.save_pretrained) "
                         "beside the file")
    return tokenizer


def byte_symbols() -> list[str]:
    """CLIP's (GPT-2's) 256 byte symbols in vocabulary order: printable bytes as themselves, then the rest
    shifted past 255 so that no symbol is whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(rest))]


@functools.lru_cache(maxsize=2)
def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    """transformers' CLIPTokenizer on CLIP's published vocabulary, from the BPE merges open_clip ships: the 256
    byte symbols, the same word-final (</w>), the first 48894 merges joined, <|startoftext|>, <|endoftext|>.
    SD 1 pads with <|endoftext|>, SD 2 (OpenCLIP) with "!"."""
    _, transformers = libraries()
    spec = importlib.util.find_spec("open_clip")  # located, not imported: only its data file is read
    gz = Path(next(iter(spec.submodule_search_locations or []), "")) / "bpe_simple_vocab_16e6.txt.gz" if spec else None
    if gz is None or not gz.is_file():
        raise UnmixError(f"a Stable Diffusion single-file checkpoint needs CLIP's tokenizer vocabulary: {OPEN_CLIP_HINT}")
    merges = gzip.decompress(gz.read_bytes()).decode("utf-8").split("\n")[1:VOCAB_SIZE - 2 * 256 - 2 + 1]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory(prefix="unmix-clip-") as tmp:
        vocab, merges_file = Path(tmp) / "vocab.json", Path(tmp) / "merges.txt"
        vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
        merges_file.write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        return transformers.CLIPTokenizer(str(vocab), str(merges_file), pad_token=pad_token, model_max_length=77)
