import os

import numpy as np
import pytest
import torch
from PIL import Image

from unmix.data import Dataset, load_dataset
from unmix.data import emoji as emoji_mod
from unmix.errors import UnmixError


def test_digits_are_8x8_with_17_grey_levels_and_10_classes():
    ds = load_dataset("digits")
    assert (len(ds), ds.shape, ds.num_classes) == (1797, (1, 8, 8), 10)
    x, y = ds.batch(torch.arange(len(ds)))
    assert x.dtype == torch.float32 and x.min() == -1 and x.max() == 1
    assert len(torch.unique(x)) == 17
    assert set(y.tolist()) == set(range(10))
    with pytest.raises(UnmixError, match="8x8"):
        load_dataset("digits", size=16)


@pytest.mark.parametrize("name, classes", [("swissroll", 0), ("ring", 8), ("moons", 2)])
def test_toys_are_2d_deterministic_and_scaled(name, classes):
    a, b = load_dataset(name), load_dataset(name)
    assert a.shape == (2,) and not a.is_image and a.num_classes == classes
    assert torch.equal(a.data, b.data)
    assert a.data.abs().max() < 1.5


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(UnmixError, match="valid: digits, emoji, swissroll, ring, moons, folder:PATH"):
        load_dataset("mnist")


# -- folders --------------------------------------------------------------------------------------
def _img(path, size=(40, 30), mode="RGB", color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_classes_from_subfolders_resize_and_crop(tmp_path):
    _img(tmp_path / "cats" / "a.png", (40, 30))
    _img(tmp_path / "cats" / "b.jpg", (64, 64))
    _img(tmp_path / "dogs" / "c.png", (30, 50), "RGBA", (0, 0, 255, 255))
    _img(tmp_path / "top.png")  # outside any class folder: not used when classes exist
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}", size=16)
    assert ds.shape == (3, 16, 16) and len(ds) == 3
    assert ds.class_names == ["cats", "dogs"] and ds.labels.tolist() == [0, 0, 1]
    x, _ = ds.batch(torch.tensor([2]))
    assert torch.allclose(x[0, :, 8, 8], torch.tensor([-1.0, -1.0, 1.0]))


def test_folder_converts_grey_palette_and_transparency(tmp_path):
    _img(tmp_path / "g1.png", (20, 20), "L", 0)
    _img(tmp_path / "g2.png", (20, 20), "LA", (0, 0))  # fully transparent -> white
    ds = load_dataset(f"folder:{tmp_path}", size=8)
    assert ds.shape == (1, 8, 8) and ds.labels is None
    assert ds.data[0].max() == 0 and ds.data[1].min() == 255
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([10, 200, 30] * 256)
    pal.save(tmp_path / "p.png")
    ds = load_dataset(f"folder:{tmp_path}", size=8)
    assert ds.shape == (3, 8, 8) and ds.data[2, :, 0, 0].tolist() == [10, 200, 30]


def test_folder_lists_and_skips_unreadable_files(tmp_path, capsys):
    _img(tmp_path / "good.png")
    (tmp_path / "corrupt.png").write_bytes(b"definitely not a png")
    good = tmp_path / "good.png"
    (tmp_path / "truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    ds = load_dataset(f"folder:{tmp_path}", size=16)
    assert len(ds) == 1 and ds.info["files"] == ["good.png"]
    err = capsys.readouterr().err
    assert "skipped 2 unreadable" in err and "corrupt.png" in err and "truncated.png" in err


def test_folder_errors(tmp_path):
    with pytest.raises(UnmixError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnmixError, match="holds no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    _img(tmp_path / "small" / "tiny.png", (10, 12))
    _img(tmp_path / "small" / "ok.png", (40, 40))
    with pytest.raises(UnmixError, match=r"smaller than the requested size 32: tiny.png \(10x12\)"):
        load_dataset(f"folder:{tmp_path / 'small'}", size=32)
    (tmp_path / "bad" ).mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    with pytest.raises(UnmixError, match="no readable images"):
        load_dataset(f"folder:{tmp_path / 'bad'}")


# -- emoji ----------------------------------------------------------------------------------------
def test_emoji_missing_font_says_how_to_install(monkeypatch):
    monkeypatch.setattr(emoji_mod, "FONT_PATHS", ("/nonexistent/NotoColorEmoji.ttf",))
    monkeypatch.delenv("UNMIX_EMOJI_FONT", raising=False)
    with pytest.raises(UnmixError, match="apt-get install fonts-noto-color-emoji"):
        load_dataset("emoji")


def test_emoji_group_table():
    assert emoji_mod.GROUPS[emoji_mod.group_of(0x1F600)] == "Smileys & Emotion"
    assert emoji_mod.GROUPS[emoji_mod.group_of(0x1F436)] == "Animals & Nature"
    assert emoji_mod.GROUPS[emoji_mod.group_of(0x1F355)] == "Food & Drink"
    assert emoji_mod.GROUPS[emoji_mod.group_of(0x1F697)] == "Travel & Places"
    assert emoji_mod.GROUPS[emoji_mod.group_of(0x1F3C1)] == "Flags"
    assert emoji_mod.GROUPS[emoji_mod.group_of(0x27A1)] == "Symbols"


@pytest.mark.skipif(not any(os.path.isfile(p) for p in emoji_mod.FONT_PATHS), reason="emoji font not installed")
def test_emoji_renders_names_groups_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("emoji", size=16)
    assert 1300 <= len(ds) <= 1500 and ds.shape == (3, 16, 16) and ds.data.dtype == torch.uint8
    names = ds.info["names"]
    i = names.index("GRINNING FACE")
    assert ds.info["groups"][i] == "Smileys & Emotion" and ds.class_names[int(ds.labels[i])] == "Smileys & Emotion"
    assert ds.data[:, :, 0, 0].float().mean() > 250  # corners are white background
    assert ds.data[i, 0, 8, 8] > 150 and ds.data[i, 2, 8, 8] < 120  # a yellow face
    cached = list((tmp_path / "unmix").glob("emoji-16-*.npz"))
    assert len(cached) == 1
    assert np.load(cached[0], allow_pickle=False)["images"].shape == (len(ds), 3, 16, 16)
    again = load_dataset("emoji", size=16)
    assert torch.equal(again.data, ds.data) and again.info["names"] == names


def test_dataset_batch_and_describe():
    ds = Dataset("t", torch.tensor([[[[0, 255]]]], dtype=torch.uint8), torch.tensor([0]), ["a"])
    x, y = ds.batch(torch.tensor([0]))
    assert x.flatten().tolist() == [-1.0, 1.0] and y.tolist() == [0]
    assert ds.describe() == {"name": "t", "shape": [1, 1, 2], "size": 1, "class_names": ["a"]}


def test_grid_layout_and_grey_gaps_for_rgb_and_grey():
    from unmix.data.images import make_grid

    rgb = make_grid(torch.ones(5, 3, 4, 4), nrow=3, pad=2)
    assert rgb.size == (3 * 6 + 2, 2 * 6 + 2) and rgb.getpixel((0, 0)) == (128, 128, 128)
    assert rgb.getpixel((2, 2)) == (255, 255, 255)
    grey = make_grid(-torch.ones(2, 1, 4, 4), pad=1)
    assert grey.mode == "L" and grey.getpixel((0, 0)) == 128 and grey.getpixel((1, 1)) == 0
