"""Shared material for the hostile-input tests (issue 17): one tiny checkpoint per session, damaged copies of it,
images in every odd mode and state, and the assertion every bad input must pass (exit 2, no traceback, one line
naming the problem).

Not a test file. Test modules import it by name (pytest puts tests/ on sys.path); the session's checkpoints are
cached here at module level, so every test module that asks for them shares the same two folders.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

import unmix.cli.commands  # noqa: F401  registers every command on the app
from unmix.cli.app import run_app

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# a U-Net small enough to train in a second at one thread
TINY_NET = {"channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "attn_levels": [1]}
TINY_FLAGS = ["--channels", "8", "--channel-mult", "1,2", "--blocks", "1", "--attn", "1", "--batch-size", "8",
              "--threads", "1", "--nfe", "2", "--log-every", "1"]

_CACHE: dict[str, Path] = {}


def tiny_run(root: Path, name: str = "run", cond: str = "none", steps: int = 2) -> Path:
    """A few training steps of a tiny U-Net on digits, through the library's own trainer (no CLI)."""
    from unmix.training import trainer
    from unmix.training.config import TrainConfig

    out = root / name
    cfg = TrainConfig(data="digits", out=str(out), steps=steps, batch_size=8, lr=1e-3, warmup_steps=1, cond=cond,
                      net=dict(TINY_NET), checkpoint_every=steps, sample_every=10**6, log_every=1, nfe=2, threads=1,
                      device="cpu")
    result = trainer.start(cfg).train(progress=False)
    assert result.checkpoint is not None and result.checkpoint.is_dir()
    return out


def session_runs(tmp_path_factory) -> dict[str, Path]:
    """{"run": an unconditional run folder, "cond": a class-conditional one}, built once per session."""
    if not _CACHE:
        root = tmp_path_factory.mktemp("hostile_runs")
        _CACHE["run"] = tiny_run(root, "run")
        _CACHE["cond"] = tiny_run(root, "cond", cond="label")
    return _CACHE  # read-only: a test that damages a checkpoint damages a copy


def copy_checkpoint(src: Path, dst: Path) -> Path:
    """A private copy of a checkpoint folder, to damage."""
    shutil.copytree(src, dst)
    return dst


# -- running the command line ---------------------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str, str]:
    """Run `unmix ARGS` in this process; (exit code, stdout, stderr)."""
    code = run_app([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def visible_lines(text: str) -> list[str]:
    """The lines a terminal would show: a progress bar redrawn with \\r counts once, as its last state; bars that
    erase themselves (leave=False) count not at all."""
    lines = []
    for line in text.split("\n"):  # not splitlines(): it would split at every \r too
        shown = line.split("\r")[-1].strip()
        if shown:
            lines.append(shown)
    return lines


def assert_one_error(code: int, err: str, *words: str) -> str:
    """Exit code 2, no traceback, exactly one line on stderr, `error: ...` naming each of `words`."""
    assert "Traceback" not in err, err
    lines = visible_lines(err)
    assert code == 2, f"exit {code}, stderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line, got:\n{err}"
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not named in: {lines[0]}"
    return lines[0]


# -- hostile images ---------------------------------------------------------------------------------------------
def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


def digit_like(size: int = 8, seed: int = 0) -> np.ndarray:
    """A uint8 greyscale picture with some structure (a bright square on dark noise)."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 60, (size, size)).astype(np.uint8)
    a[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 230
    return a


def make_images(folder: Path) -> dict[str, Path]:
    """Every kind of image file a user might hand over, good and bad, written once into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    grey = Image.fromarray(digit_like(8))
    rgb = Image.merge("RGB", [grey, grey.transpose(Image.FLIP_LEFT_RIGHT), grey])
    files: dict[str, Path] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = folder / name
        files[name].write_bytes(data)

    good = _png_bytes(grey)
    put("good.png", good)
    put("rgb.png", _png_bytes(rgb))
    put("rgba.png", _png_bytes(rgb.convert("RGBA")))
    put("la.png", _png_bytes(grey.convert("LA")))
    put("palette.png", _png_bytes(rgb.convert("P", palette=Image.ADAPTIVE, colors=16)))
    put("onebit.png", _png_bytes(grey.convert("1")))
    put("sixteen.png", _png_bytes(Image.fromarray((digit_like(8).astype(np.uint16) * 257))))
    buf = io.BytesIO()
    rgb.convert("CMYK").save(buf, format="JPEG")
    put("cmyk.jpg", buf.getvalue())
    put("big.png", _png_bytes(Image.fromarray(np.kron(digit_like(8), np.ones((5, 5), np.uint8)))))  # 40x40
    put("wide.png", _png_bytes(Image.fromarray(np.tile(digit_like(8), (1, 3)))))  # 24x8
    put("tiny.png", _png_bytes(Image.fromarray(np.full((1, 1), 200, np.uint8))))
    put("mask.png", _png_bytes(Image.fromarray(np.where(np.arange(64).reshape(8, 8) >= 32, 255, 0).astype(np.uint8))))
    half = np.zeros((40, 40), np.uint8)
    half[20:] = 255
    put("mask_big.png", _png_bytes(Image.fromarray(half)))
    put("mask_wrong.png", _png_bytes(Image.fromarray(half[:9, :7])))
    put("mask_white.png", _png_bytes(Image.fromarray(np.full((8, 8), 255, np.uint8))))
    put("mask_black.png", _png_bytes(Image.fromarray(np.zeros((8, 8), np.uint8))))
    rgba = np.full((8, 8, 4), 255, np.uint8)
    rgba[:4, :, :3] = 0
    put("mask_rgba.png", _png_bytes(Image.fromarray(rgba, "RGBA")))
    put("truncated.png", good[: len(good) // 2])
    put("corrupt.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    put("empty.png", b"")
    put("text.png", b"this is not an image\n")
    put("png_named.jpg", good)  # a PNG with the wrong extension: readable (PIL looks at the bytes)
    put("html.png", b"<html><body>404 Not Found</body></html>")
    (folder / "a folder.png").mkdir(exist_ok=True)
    files["folder"] = folder / "a folder.png"
    files["missing"] = folder / "no_such_image.png"
    return files


# -- hostile checkpoints ----------------------------------------------------------------------------------------
class Boom:
    """Unpickling this writes a marker file: a test that finds the marker has proof that code ran."""

    marker: str = ""

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "unpickled!"))


def pickle_file(path: Path, marker: Path) -> Path:
    boom = Boom()
    boom.marker = str(marker)
    path.write_bytes(pickle.dumps({"state_dict": boom}))
    return path


def torch_zip_file(path: Path, marker: Path) -> Path:
    """A torch.save-style zip (archive/data.pkl) whose pickle would run code."""
    boom = Boom()
    boom.marker = str(marker)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(boom))
        z.writestr("archive/version", "3\n")
    return path


def _edit_config(folder: Path, fn) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    fn(cfg)
    path.write_text(json.dumps(cfg))


def _set(*keys_value):
    *keys, value = keys_value

    def fn(cfg):
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value

    return fn


def _truncate(name: str, keep: float = 0.5):
    def fn(folder: Path):
        p = folder / name
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return fn


def _replace(name: str, data: bytes):
    return lambda folder: (folder / name).write_bytes(data)


def _config(fn):
    return lambda folder: _edit_config(folder, fn)


# name -> (function that damages a checkpoint folder in place, a word the error must name)
DAMAGES = {
    "config-truncated": (_truncate("config.json"), "config.json"),
    "config-empty": (_replace("config.json", b""), "config.json"),
    "config-binary": (_replace("config.json", bytes(range(256))), "config.json"),
    "config-list": (_replace("config.json", b"[1, 2, 3]"), "unmix checkpoint"),
    "config-no-format": (_config(lambda c: c.pop("format")), "format"),
    "config-newer-version": (_config(_set("version", 99)), "newer"),
    "config-version-str": (_config(_set("version", "1")), "version"),
    "config-net-null": (_config(_set("net", None)), "net"),
    "config-recipe-null": (_config(_set("recipe", None)), "recipe"),
    "config-data-null-shape": (_config(_set("data", "shape", None)), "data"),
    "config-data-str": (_config(_set("data", "digits")), "data"),
    "config-unknown-key": (_config(_set("bogus_section", 1)), "bogus_section"),
    "config-net-unknown-key": (_config(_set("net", "bogus_width", 3)), "bogus_width"),
    "config-channels-str": (_config(_set("net", "channels", "eight")), "config.json"),
    "config-channels-float": (_config(_set("net", "channels", 8.5)), "config.json"),
    "config-channels-negative": (_config(_set("net", "channels", -8)), "config.json"),
    "config-channel-mult-str": (_config(_set("net", "channel_mult", "1,2")), "config.json"),
    "config-kind-unknown": (_config(_set("net", "kind", "transformer9000")), "config.json"),
    "config-recipe-name": (_config(_set("recipe", "name", 5)), "config.json"),
    "config-recipe-unknown": (_config(_set("recipe", "name", "bogus")), "config.json"),
    "config-sigma-data-str": (_config(_set("recipe", "sigma_data", "half")), "config.json"),
    "config-shape-str": (_config(_set("data", "shape", "1x8x8")), "config.json"),
    "config-shape-wrong": (_config(_set("data", "shape", [3, 16, 16])), "config.json"),
    "config-channels-mismatch": (_config(_set("net", "channels", 16)), "weights do not match"),
    "ema-truncated": (_truncate("ema.safetensors"), "ema.safetensors"),
    "ema-header-only": (_truncate("ema.safetensors", 0.02), "ema.safetensors"),
    "ema-empty": (_replace("ema.safetensors", b""), "ema.safetensors"),
    "ema-garbage": (_replace("ema.safetensors", os.urandom(4096)), "ema.safetensors"),
    "ema-missing": (lambda f: (f / "ema.safetensors").unlink(), "ema.safetensors"),
    "ema-is-folder": (lambda f: ((f / "ema.safetensors").unlink(), (f / "ema.safetensors").mkdir()),
                      "ema.safetensors"),
    "config-missing": (lambda f: (f / "config.json").unlink(), "checkpoint"),
}


def damaged(src: Path, dst: Path, damage: str) -> Path:
    """A copy of checkpoint `src` at `dst` with one named damage applied."""
    copy_checkpoint(src, dst)
    DAMAGES[damage][0](dst)
    return dst
