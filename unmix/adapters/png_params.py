"""What made an image, written into its PNG: A1111's `parameters` text chunk, and unmix's own JSON record.

    parameters   a cat on a mat                                  the prompt (any number of lines)
                 Negative prompt: blurry                          (when there is one)
                 Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3, Size: 512x512, Model hash: 1a2b3c4d5e,
                 Model: my-sd, NFE: 20, Lora hashes: "style: 0f9e8d7c6b"
    unmix        {"format": 1, "model": ..., "sampler": ..., "nfe": ..., "seed": ..., "batch": [...], ...}

`parameters` is the convention A1111, ComfyUI and image sites read (`parse_parameters` reads it back the way A1111's
own parser does); the `unmix` record holds everything `unmix sample --from-png` needs to redraw the image bit for bit
on the same machine: the model, the weights, the sampler name and NFE, the prompts, guidance and labels, the LoRAs,
and the seeds of the whole batch the image was drawn in (a batch's rows agree with single draws only to the rounding
of batched matmuls, so the redraw draws the same batch again).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from unmix.errors import UnmixError

FORMAT = 1
_PAIR = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')  # A1111's re_param


def _short(digest: str | None) -> str | None:
    return digest[:10] if digest else None


def parameters_text(record: dict) -> str:
    """A1111's `parameters` chunk for one image's record (see `image_records`)."""
    h, w = record["size"]
    pairs = {"Steps": record["steps"], "Sampler": record["sampler"], "CFG scale": record.get("cfg_scale"),
             "Seed": record["seed"], "Size": f"{w}x{h}", "Model hash": _short(record.get("model_hash")),
             "Model": record.get("model_name"), "NFE": record["nfe"]}
    if record.get("loras"):
        pairs["Lora hashes"] = '"' + ", ".join(f"{lo['name']}: {_short(lo['sha256'])}" for lo in record["loras"]) + '"'
    lines = [record.get("prompt") or ""]
    if record.get("negative_prompt"):
        lines.append(f"Negative prompt: {record['negative_prompt']}")
    lines.append(", ".join(f"{k}: {v}" for k, v in pairs.items() if v is not None))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict:
    """A1111's `parameters` text as {"prompt", "negative_prompt", and each key of the last line: its value}, read the
    way A1111's parse_generation_parameters does (quoted values unquoted)."""
    *lines, last = text.strip().split("\n")
    if len(_PAIR.findall(last)) < 3:  # no settings line: all of it is the prompt
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative, line = True, line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out = {"prompt": "\n".join(prompt).strip(), "negative_prompt": "\n".join(negative).strip()}
    for key, value in _PAIR.findall(last):
        value = value.strip()
        out[key] = json.loads(value) if value.startswith('"') and value.endswith('"') else value
    return out


def image_records(base: dict, seeds: list[int], batch_size: int, prompts=None, labels=None) -> list[dict]:
    """One record per image of a draw of len(seeds) images in batches of `batch_size`: `base` (model, sampler, nfe,
    steps, guidance, negative_prompt, ...) plus the image's seed, prompt and label, and its batch's seeds, prompts,
    labels and its index in that batch."""
    records = []
    for lo in range(0, len(seeds), batch_size):
        rows = slice(lo, min(len(seeds), lo + batch_size))
        batch_prompts = prompts[rows] if isinstance(prompts, list) else prompts
        batch_labels = None if labels is None else [int(v) for v in labels[rows]]
        for j, s in enumerate(seeds[rows]):
            records.append({**base, "format": FORMAT, "seed": int(s), "batch": [int(v) for v in seeds[rows]],
                            "index": j, "prompt": batch_prompts[j] if isinstance(batch_prompts, list) else batch_prompts,
                            "batch_prompts": batch_prompts, "labels": batch_labels})
    return records


def png_texts(record: dict) -> dict[str, str]:
    """The text chunks of one image: A1111's `parameters` and unmix's `unmix` JSON."""
    return {"parameters": parameters_text(record), "unmix": json.dumps(record, sort_keys=True)}


def png_info(texts: dict[str, str] | None) -> PngImagePlugin.PngInfo | None:
    """PIL's PngInfo of text chunks (tEXt, or iTXt for text beyond Latin-1), for Image.save(pnginfo=)."""
    if not texts:
        return None
    info = PngImagePlugin.PngInfo()
    for key, value in texts.items():
        info.add_text(key, value)
    return info


def read_record(path) -> dict:
    """The unmix record of a PNG that `unmix sample` wrote."""
    path = Path(path).expanduser()
    try:
        with Image.open(path) as img:
            if img.format != "PNG":
                raise UnmixError(f"{path} is a {img.format} file; --from-png takes a PNG that unmix sample wrote")
            img.load()
            text = dict(getattr(img, "text", {}) or {})
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise UnmixError(f"{path} is not a readable PNG ({e})") from None
    if "unmix" not in text:
        what = "only A1111's parameters" if "parameters" in text else "no generation record"
        raise UnmixError(f"{path} has {what}; --from-png redraws images that unmix sample wrote (they carry an "
                         "'unmix' text chunk)")
    try:
        record = json.loads(text["unmix"])
    except ValueError:
        record = None
    if not isinstance(record, dict) or record.get("format") != FORMAT or "model" not in record:
        raise UnmixError(f"{path}: its unmix record is damaged or of another version (format {FORMAT} expected)")
    return record
