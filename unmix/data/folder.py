"""Any folder of images as a dataset: each first-level subfolder is a class (files at the top are then
skipped), images are resized and centre-cropped to size x size, greyscale / RGBA / palette converted.
Unreadable files are listed and skipped; an empty folder or an image smaller than the size is an error.

Captions follow the conventions of the field's tools, and either or both may be used:
- a sidecar text file beside an image with the same stem (`cat1.png` + `cat1.txt`); each non-empty line is one
  caption of that image;
- a `metadata.jsonl` in any folder (Hugging Face's imagefolder convention): one JSON object per line, with
  `file_name` relative to that folder and `text`, a caption or a list of captions.
A folder with either gives a Dataset with `captions` (one list of captions per image; an image without any is
the null caption); a caption for an image that does not exist, or a metadata line that cannot be read, is an
error naming the file and line. Stray `.txt` files count as sidecars only in a folder that uses sidecars.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from unmix.data.dataset import Dataset
from unmix.data.images import IMAGE_EXTENSIONS, open_image, pil_to_array, resize_crop
from unmix.errors import UnmixError
from unmix.text.captions import unique

MODE_NAMES = {"L": "greyscale", "LA": "greyscale with transparency", "1": "black-and-white", "P": "palette",
              "RGBA": "with transparency", "CMYK": "CMYK", "I;16": "16-bit greyscale", "I": "32-bit greyscale"}


def _image_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(IMAGE_EXTENSIONS)]
    return files


def _sidecar_captions(root: Path, images: list[Path]) -> dict[Path, list[str]]:
    """{image: lines of its sidecar .txt}; when any image has one, a .txt without an image is an error."""
    by_stem: dict[Path, list[Path]] = {}
    for f in images:
        by_stem.setdefault(f.with_suffix(""), []).append(f)
    texts = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        texts += [Path(dirpath) / f for f in sorted(filenames) if f.lower().endswith(".txt")]
    out, orphans = {}, []
    for t in texts:
        if t.with_suffix("") not in by_stem:
            orphans.append(t)
            continue
        try:
            lines = t.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UnmixError(f"cannot read caption file {t.relative_to(root)}: {e}") from None
        out.update(dict.fromkeys(by_stem[t.with_suffix("")], lines))
    if out and orphans:
        raise UnmixError(f"caption file {orphans[0].relative_to(root)} has no image beside it with the same name "
                         f"({', '.join(IMAGE_EXTENSIONS)}); rename or remove it")
    return out


def _metadata_captions(root: Path, images: list[Path]) -> dict[Path, list[str]] | None:
    """{image: captions} from every metadata.jsonl under root (file_name relative to the metadata's folder);
    None when there is no metadata.jsonl."""
    known = set(images)
    out: dict[Path, list[str]] | None = None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if "metadata.jsonl" not in filenames:
            continue
        meta = Path(dirpath) / "metadata.jsonl"
        where = meta.relative_to(root)
        out = {} if out is None else out
        try:
            lines = meta.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UnmixError(f"cannot read {where}: {e}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UnmixError(f"{where} line {n} is not valid JSON ({e.msg}); each line must be an object "
                                 f'like {{"file_name": "a.png", "text": "a caption"}}') from None
            name, text = (row.get("file_name"), row.get("text")) if isinstance(row, dict) else (None, None)
            if not isinstance(name, str) or not (text is None or isinstance(text, str) or
                                                 (isinstance(text, list) and all(isinstance(t, str) for t in text))):
                raise UnmixError(f"{where} line {n} needs a string \"file_name\" and a \"text\" that is a string or "
                                 f"a list of strings, got {line.strip()[:80]}")
            image = Path(os.path.normpath(meta.parent / name))
            if image not in known:
                raise UnmixError(f"{where} line {n} has a caption for {name!r}, which is not an image in {root}")
            out.setdefault(image, []).extend([text] if isinstance(text, str) else text or [])
    return out


def read_captions(root: Path, images: list[Path]) -> dict[Path, list[str]] | None:
    """Captions for image files under root from sidecar .txt files and metadata.jsonl (metadata first);
    None when the folder has neither."""
    meta, side = _metadata_captions(root, images), _sidecar_captions(root, images)
    if meta is None and not side:
        return None
    return {f: unique((meta or {}).get(f, []) + side.get(f, [])) for f in images}


def _listing(items: list[str], limit: int = 10) -> str:
    more = f", and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _source(path: Path) -> tuple[str, tuple[int, int]]:
    """An image file's mode and size, from its header alone."""
    with Image.open(path) as img:
        return ("RGBA" if "transparency" in img.info and img.mode != "RGBA" else img.mode), img.size


def load_folder(path: str, size: int = 32) -> Dataset:
    """The folder as a Dataset; `info["found"]` says what was read, converted and skipped (see `folder_report`)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UnmixError(f"image folder {path!r} does not exist or is not a folder")
    all_files = files = _image_files(root)
    classes = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1})
    if classes:
        files = [f for f in files if len(f.relative_to(root).parts) > 1]
    at_top = len(all_files) - len(files)
    if not files:
        raise UnmixError(f"image folder {path!r} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    captions = read_captions(root, all_files)
    images, labels, kept, skipped, small, sources = [], [], [], [], [], []
    for f in files:
        try:
            img = open_image(f)
            sources.append(_source(f))
        except (OSError, ValueError, SyntaxError) as e:
            skipped.append(f"{f.relative_to(root)} ({e})")
            continue
        if min(img.size) < size:
            small.append(f"{f.relative_to(root)} ({img.width}x{img.height})")
            continue
        images.append(img)
        kept.append(str(f.relative_to(root)))
        labels.append(classes.index(f.relative_to(root).parts[0]) if classes else 0)
    if skipped:
        print(f"warning: skipped {len(skipped)} unreadable image(s): {_listing(skipped)}", file=sys.stderr)
    if small:
        raise UnmixError(f"{len(small)} image(s) are smaller than the requested size {size}: {_listing(small, 3)}; "
                         f"choose a smaller --size or remove them")
    if not images:
        raise UnmixError(f"image folder {path!r} has no readable images")
    grey = all(img.mode == "L" for img in images)
    arrays = [pil_to_array(resize_crop(img if grey else img.convert("RGB"), size)) for img in images]
    data = torch.from_numpy(np.stack(arrays))
    item_captions = None if captions is None else [captions[root / f] for f in kept]
    if item_captions is not None and not all(item_captions):
        missing = [f for f, c in zip(kept, item_captions) if not c]
        print(f"note: {len(missing)} of {len(kept)} images have no caption and train as the null caption: "
              f"{_listing(missing, 3)}", file=sys.stderr)
    found = {"images": len(kept), "classes": {c: labels.count(i) for i, c in enumerate(classes)},
             "sizes": Counter(f"{w}x{h}" for _, (w, h) in sources).most_common(),
             "converted": dict(Counter(mode for mode, _ in sources if mode != ("L" if grey else "RGB"))),
             "mode": "L" if grey else "RGB", "unreadable": len(skipped), "at_top": at_top, "size": size}
    return Dataset(f"folder:{path}", data, torch.as_tensor(labels) if classes else None, classes,
                   {"files": kept, "found": found}, captions=item_captions)


def folder_report(found: dict) -> list[str]:
    """What a folder run found, as lines to print before training: count, sizes, conversions, skipped files."""
    classes = found["classes"]
    kinds = f" in {len(classes)} classes ({', '.join(f'{c} {n}' for c, n in classes.items())})" if classes else ""
    sizes = found["sizes"]
    areas = sorted(sizes, key=lambda s: int(s[0].split("x")[0]) * int(s[0].split("x")[1]))
    spread = f"{areas[0][0]} to {areas[-1][0]}, most often {sizes[0][0]} ({sizes[0][1]})" if len(sizes) > 1 \
        else f"all {sizes[0][0]}"
    side, mode = found["size"], found["mode"]
    lines = [f"found {found['images']} images{kinds}; sizes {spread}; the model sees them as {side}x{side} "
             f"{'greyscale' if mode == 'L' else 'RGB'} (short side scaled to {side}, centre cropped)"]
    if found["converted"]:
        what = ", ".join(f"{n} {MODE_NAMES.get(m, m)}" for m, n in sorted(found["converted"].items()))
        white = " (transparency composited on white)" if {"RGBA", "LA", "PA"} & found["converted"].keys() else ""
        lines.append(f"converted to {'greyscale' if mode == 'L' else 'RGB'}: {what}{white}")
    skipped = [f"{found['unreadable']} unreadable (listed above)"] if found["unreadable"] else []
    skipped += [f"{found['at_top']} at the top level (with subfolders, each subfolder is a class)"] if found["at_top"] else []
    if skipped:
        lines.append(f"skipped {' and '.join(skipped)}")
    return lines
