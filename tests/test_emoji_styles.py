"""The five-style emoji data: the picture convention, the composition split, identities, names that load back, and
one line for a missing source. Tests that need the artwork skip with the install command as the reason; the ones
over all 7,640 pictures run on the cached pictures only (the slow test draws them from scratch)."""
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unmix.cli.data_cmd  # noqa: F401  (registers `unmix data`)
import unmix.cli.train_cmd  # noqa: F401
from unmix.cli.app import run_app
from unmix.data import emoji_sources as src
from unmix.data import emoji_styles as es
from unmix.data import load_dataset
from unmix.data.emoji import emoji_table
from unmix.errors import UnmixError

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
KNOWN = ("red apple", "grinning face", "red heart")  # solid edges: their bounding box is their visible extent


def installed(style: str) -> bool:
    try:
        src.check_installed([style])
        return True
    except UnmixError:
        return False


@pytest.fixture(scope="module")
def sources():
    if not all(installed(s) for s in es.STYLE_IDS):
        pytest.skip(f"emoji styles not installed: run `{src.INSTALL}` (and apt-get install librsvg2-bin "
                    "fonts-noto-color-emoji)")


@pytest.fixture(scope="module")
def drawn(sources):
    """Checked when a test needs it, not at collection: finding the cache files reads every style's artwork."""
    if not all(es.cache_path(s).is_file() for s in es.STYLE_IDS):
        pytest.skip(f"five-style pictures not drawn yet: run `{src.INSTALL}`")


def ink_box(image: np.ndarray) -> tuple[float, float, int]:
    """(centre x, centre y, longer side) of the pixels visibly darker than white in a [3, H, W] picture."""
    ys, xs = np.nonzero(image.min(0) < 250)
    return (xs.min() + xs.max() + 1) / 2, (ys.min() + ys.max() + 1) / 2, max(np.ptp(xs), np.ptp(ys)) + 1


def check_convention(image: np.ndarray, what: str) -> None:
    """Centred within 1 px, longer side 90% of the side within 1 px: an extent of 0.9 * side touches up to two more
    pixels than it covers (its partly covered ends), so the pixels counted are 0.9 * side - 1 to 0.9 * side + 2."""
    side = image.shape[-1]
    cx, cy, longer = ink_box(image)
    assert abs(cx - side / 2) <= 1 and abs(cy - side / 2) <= 1, (what, cx, cy)
    assert 0.9 * side - 1 <= longer <= 0.9 * side + 2, (what, longer)
    assert all(image[:, y, x].min() == 255 for y in (0, -1) for x in (0, -1)), what  # white corners


def test_convention_on_synthetic_artwork():
    """An off-centre 150x60 black bar on a transparent 200x160 canvas: the darkness along the middle row and column
    measures its extent (57.6 and 23.04 px at 64) and its centre (the canvas centre) to a fraction of a pixel."""
    rgba = Image.new("RGBA", (200, 160), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (10, 90, 160, 150))
    picture = src.picture(rgba)
    assert picture.shape == (3, 64, 64) and picture.dtype == np.uint8
    for side, image in ((64, picture), (32, src.halve(picture[None])[0])):
        ink = 1 - image[0].astype(float) / 255
        for profile, extent in ((ink[side // 2], 0.9 * side), (ink[:, side // 2], 0.9 * side * 60 / 150)):
            centre = (profile * (np.arange(side) + 0.5)).sum() / profile.sum()
            assert abs(profile.sum() - extent) < 0.5 and abs(centre - side / 2) < 0.25, (side, profile.sum(), centre)
        check_convention(image, f"bar at {side} px")


def test_halve_is_the_rounded_mean_of_2x2_blocks():
    x = np.array([[[[0, 1, 255, 255], [1, 1, 254, 255]]]], dtype=np.uint8)
    assert src.halve(x).tolist() == [[[[1, 255]]]]


@pytest.mark.parametrize("style", es.STYLE_IDS)
def test_convention_on_known_emoji_per_style(style, sources):
    rows = [e for e in emoji_table() if e.name in KNOWN]
    found = src.find_artwork(style, rows)
    assert len(found) == len(KNOWN)
    for cps, source in found.items():
        picture = src.picture(src.draw(style, source))
        check_convention(picture, f"{style} {cps}")
        check_convention(src.halve(picture[None])[0], f"{style} {cps} at 32 px")


def test_split_rule_hand_computed():
    held = [("0031 FE0F 20E3", "fluent"), ("0031 FE0F 20E3", "fluent-flat"), ("1F468 200D 1F4BB", "twemoji")]
    kept = [("1F34E", s) for s in es.STYLE_IDS] + [("2764 FE0F", "fluent"), ("1F600", "openmoji")]
    assert all(es.is_held_out(c, s) for c, s in held) and not any(es.is_held_out(c, s) for c, s in kept)
    for c, s in held + kept:
        assert es.is_held_out(c, s) == (int(hashlib.sha256(f"{c}:{s}".encode()).hexdigest(), 16) % 10 == 0)
    for bad in ("1f34e", "1F34E FE0F ", "1F34E  FE0F", "U+1F34E", 0x1F34E):
        with pytest.raises(UnmixError, match="emoji-test.txt"):
            es.is_held_out(bad, "noto")
    with pytest.raises(UnmixError, match="unknown emoji style 'apple'"):
        es.is_held_out("1F34E", "apple")


@pytest.mark.skipif(not EMOJI_TEST.is_file(), reason="Unicode's emoji-test.txt not installed (apt-get install "
                    "unicode-data)")
def test_candidates_are_emoji_test_fully_qualified_without_tones_or_hair():
    lines = [line.split(";") for line in EMOJI_TEST.read_text(encoding="utf-8").splitlines()
             if line and not line.startswith("#")]
    want = [c.strip() for c, rest in lines if rest.split("#")[0].strip() == "fully-qualified"
            and not re.search(r"\b1F3F[B-F]\b|\b1F9B[0-3]\b", c)]
    assert [src.codepoints(e) for e in es.candidates()] == want


def test_names_slugs_and_hex_keys():
    assert src.slug("piñata") == "pinata" and src.slug("woman’s hat") == "womans-hat"
    assert src.slug("A button (blood type)") == "a-button-blood-type" and src.slug("flag: Côte d’Ivoire") == \
        "flag-cote-divoire"
    assert src.hex_key("0023-fe0f-20e3") == src.hex_key("0023-20E3") == "0023 20E3"
    assert es.parse_styles("all") == es.STYLE_IDS and es.parse_styles(None) == ("noto",)
    assert es.parse_styles("fluent-flat, noto,noto") == ("noto", "fluent-flat")
    assert es.spec_name(es.STYLE_IDS, "train") == "emoji:styles=all:split=train"
    assert es.parse_spec("emoji:styles=noto,twemoji:split=heldout") == {"styles": "noto,twemoji", "split": "heldout"}
    for bad in ("emoji:colour=red", "emoji:split", "emoji:split=train:split=all"):
        with pytest.raises(UnmixError, match="emoji:styles=all:split=train"):
            load_dataset(bad)
    with pytest.raises(UnmixError, match="unknown emoji style rococo"):
        load_dataset("emoji", styles="noto,rococo")
    with pytest.raises(UnmixError, match="split= must be one of train, heldout, all"):
        load_dataset("emoji", styles="all", split="test")
    with pytest.raises(UnmixError, match="contradicts"):
        load_dataset("emoji:styles=all:split=train", split="heldout")
    with pytest.raises(UnmixError, match="for the emoji data"):
        load_dataset("digits", styles="all")


def test_plain_emoji_stays_todays_noto_set(monkeypatch):
    import unmix.data as data

    calls = []
    monkeypatch.setattr(data, "load_emoji", lambda size, sequences=False: calls.append((size, sequences)) or "noto")
    assert load_dataset("emoji") == load_dataset("emoji", styles="noto") == load_dataset("emoji:styles=noto") == "noto"
    assert calls == [(32, False)] * 3


def test_missing_source_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for styles in ("twemoji", "openmoji,fluent", "fluent-flat"):
        with pytest.raises(UnmixError) as e:
            load_dataset("emoji", styles=styles)
        assert "\n" not in str(e.value) and f"`{src.INSTALL}`" in str(e.value)


def test_cli_missing_source_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    code = run_app(["train", "--data", "emoji:styles=twemoji,fluent:split=train", "--steps", "1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and f"`{src.INSTALL}`" in err[0], err


def test_missing_rasteriser_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UnmixError) as e:
        src.rsvg()
    assert "\n" not in str(e.value) and "apt-get install librsvg2-bin" in str(e.value)


def test_cli_install_without_npm_or_rasteriser_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # neither npm nor rsvg-convert on it
    if not all(p.folder.is_dir() for p in src.PACKAGES.values()):
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert run_app(["data", "install", "emoji-styles"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(err) == 1 and re.search(r"npm is not installed|apt-get install librsvg2-bin", err[0]), err
    assert run_app(["data", "install", "fonts"]) == 2
    assert "unknown data package 'fonts'; valid: emoji-styles" in capsys.readouterr().err


def test_five_styles_counts_split_captions_and_name_round_trip(drawn):
    ds = load_dataset("emoji", styles="all", split="all", size=64)
    n = len(ds) // 5
    assert (n, len(ds), sum(ds.info["held_out"])) == (1528, 7640, 766) and ds.shape == (3, 64, 64)
    assert ds.class_names == ["Noto", "Twemoji", "OpenMoji", "Fluent", "Fluent flat"]
    assert ds.info["held_out"] == [es.is_held_out(c, s) for c, s in zip(ds.info["codepoints"], ds.info["styles"])]
    assert [ds.class_names[int(k)] for k in ds.labels] == [src.STYLES[s].display for s in ds.info["styles"]]
    i = next(i for i, (c, s) in enumerate(zip(ds.info["codepoints"], ds.info["styles"])) if (c, s) == ("1F34E",
                                                                                                         "openmoji"))
    assert ds.captions[i][0] == "red apple, OpenMoji style" and "Food & Drink, OpenMoji style" in ds.captions[i]
    assert all(c.endswith(" style") for caps in ds.captions for c in caps)

    pairs = list(zip(ds.info["codepoints"], ds.info["styles"]))
    train, heldout = load_dataset("emoji", styles="all"), load_dataset("emoji:styles=all:split=heldout")
    assert train.name == "emoji:styles=all:split=train" and (len(train), len(heldout)) == (7640 - 766, 766)
    assert not any(train.info["held_out"]) and all(heldout.info["held_out"])
    got = list(zip(train.info["codepoints"], train.info["styles"])) + list(zip(heldout.info["codepoints"],
                                                                                heldout.info["styles"]))
    assert sorted(got) == sorted(pairs)
    assert torch.equal(train.data, torch.from_numpy(src.halve(ds.data[[not h for h in ds.info["held_out"]]].numpy())))
    again = load_dataset(train.describe()["name"], size=train.shape[-1])
    assert again.name == train.name and torch.equal(again.data, train.data) and again.info == train.info

    two = load_dataset("emoji", styles="twemoji,noto", split="heldout")
    assert two.name == "emoji:styles=noto,twemoji:split=heldout" and two.class_names == ["Noto", "Twemoji"]
    assert all(es.is_held_out(c, s) for c, s in zip(two.info["codepoints"], two.info["styles"]))


@pytest.mark.slow
def test_draws_every_style_from_scratch(tmp_path, monkeypatch, sources):
    """The whole build in a fresh cache (the packages linked in), the same pixels as the cached pictures: about two
    minutes on two cores."""
    packages = {p.folder for p in src.PACKAGES.values()}
    before = load_dataset("emoji", styles="all", split="all", size=64)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    for folder in packages:
        (tmp_path / "unmix" / "emoji-styles").mkdir(parents=True, exist_ok=True)
        os.symlink(folder, tmp_path / "unmix" / "emoji-styles" / folder.name)
    ds = load_dataset("emoji", styles="all", split="all", size=64)
    assert all(es.cache_path(s).is_file() for s in es.STYLE_IDS)
    assert torch.equal(ds.data, before.data) and ds.info == before.info and (ds.data[:, :, 0, 0] == 255).all()
