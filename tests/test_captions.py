"""Captions as data: the shipped emoji table, the emoji dataset's captions, and captioned image folders."""
import json
import os
import unicodedata

import pytest
from PIL import Image

from unmix.data import emoji as emoji_mod
from unmix.data import load_dataset
from unmix.errors import UnmixError
from unmix.text.captions import emoji_captions, unique

HAS_FONT = any(os.path.isfile(p) for p in emoji_mod.FONT_PATHS)


# -- the shipped table -----------------------------------------------------------------------------
def test_table_has_cldr_names_keywords_and_exact_groups():
    table = emoji_mod.emoji_table()
    by_text = {e.text: e for e in table}
    apple = by_text["\U0001F34E"]
    assert (apple.name, apple.keywords, apple.group, apple.subgroup, apple.unicode_name) == (
        "red apple", ("apple", "fruit", "red"), "Food & Drink", "food-fruit", "RED APPLE")
    assert by_text["\u2764\ufe0f"].name == "red heart" and by_text["\u2764\ufe0f"].unicode_name == "HEAVY BLACK HEART"
    assert by_text["\U0001F1EB\U0001F1F7"].name == "flag: France" and by_text["\U0001F1EB\U0001F1F7"].group == "Flags"
    assert by_text["\U0001F44D\U0001F3FD"].name == "thumbs up: medium skin tone"
    assert by_text["1\ufe0f\u20e3"].name == "keycap: 1"
    # Unicode's own counts for emoji-test.txt 15.0: 3,655 fully-qualified emoji and 9 components
    assert len(table) == 3664 and sum(e.group == "Component" for e in table) == 9
    assert {e.group for e in table} == set(emoji_mod.GROUPS)
    # the Emoji-15 glyphs Python 3.11's unicodedata (Unicode 14) cannot name are in the table with their names
    new = [e for e in table if e.version == "E15.0" and len(e.bare) == 1]
    assert len(new) == 20 and "shaking face" in {e.name for e in new}
    if unicodedata.unidata_version.startswith("14."):
        assert all(unicodedata.name(e.bare, "") == "" for e in new)


def test_groups_are_exact_where_the_old_ranges_were_wrong():
    g = lambda cp: emoji_mod.GROUPS[emoji_mod.group_of(cp)]  # noqa: E731
    assert g(0x1F600) == "Smileys & Emotion" and g(0x1F436) == "Animals & Nature" and g(0x1F355) == "Food & Drink"
    assert g(0x1F697) == "Travel & Places" and g(0x1F3C1) == "Flags" and g(0x27A1) == "Symbols"
    # the old code-point ranges put these (and 124 more of the 1,361) in People & Body or Symbols
    assert g(0x1F47B) == "Smileys & Emotion"  # ghost
    assert g(0x1F648) == "Smileys & Emotion"  # see-no-evil monkey
    assert g(0x1F9E1) == "Smileys & Emotion"  # orange heart
    with pytest.raises(UnmixError, match="not an emoji"):
        emoji_mod.group_of(ord("A"))


def test_emoji_caption_variants():
    assert emoji_captions("red apple", ["apple", "fruit", "red"]) == [
        "red apple", "apple", "fruit", "red", "apple, fruit, red", "red apple, apple, fruit, red"]
    # a keyword equal to the name is not repeated; no keywords (emoji newer than CLDR) leaves the name alone
    assert emoji_captions("grinning face", ["face", "grin", "grinning face"]) == [
        "grinning face", "face", "grin", "face, grin", "grinning face, face, grin"]
    assert emoji_captions("shaking face", []) == ["shaking face"]
    assert unique(["  a  cat ", "A cat", "", "dog\n"]) == ["a cat", "dog"]


@pytest.mark.skipif(not HAS_FONT, reason="emoji font not installed")
def test_emoji_dataset_captions_groups_and_new_glyphs(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("emoji", size=16)
    assert len(ds) == len(ds.captions) == 1381  # Debian's font: 1,361 emoji unicodedata names + 20 Emoji-15 glyphs
    i = ds.info["short_names"].index("red apple")
    assert ds.captions[i][0] == "red apple" and "fruit" in ds.captions[i]
    assert ds.class_names[int(ds.labels[i])] == "Food & Drink" == ds.info["groups"][i]
    assert ds.info["names"][i] == "RED APPLE" and ds.info["codepoints"][i] == 0x1F34E
    j = ds.info["short_names"].index("shaking face")  # Emoji 15: unicodedata cannot name it
    assert ds.info["names"][j] == "SHAKING FACE" and ds.info["groups"][j] == "Smileys & Emotion"
    assert ds.data[j, :, 8, 8].float().mean() < 250  # a drawn glyph, not a blank canvas
    # labels are exactly the table's groups
    table = {e.text: e.group for e in emoji_mod.emoji_table()}
    assert [ds.class_names[int(k)] for k in ds.labels] == [table[t] for t in ds.info["emoji"]]


@pytest.mark.skipif(not HAS_FONT, reason="emoji font not installed")
def test_emoji_with_sequences_renders_flags_and_keycaps(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ds = load_dataset("emoji+sequences", size=16)
    names = ds.info["short_names"]
    assert len(ds) > 3000 and "flag: France" in names and "keycap: 1" in names and "codepoints" not in ds.info
    i = names.index("flag: France")
    assert ds.captions[i][0] == "flag: France" and ds.info["groups"][i] == "Flags"
    blue, red = ds.data[i, :, 8, 2].float(), ds.data[i, :, 8, 13].float()  # the tricolour's left and right bands
    assert blue[2] > blue[0] + 50 and red[0] > red[2] + 50


# -- folders ---------------------------------------------------------------------------------------
def _img(path, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 20), color).save(path)


def test_folder_sidecar_captions_and_null_captions(tmp_path, capsys):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.jpg")
    _img(tmp_path / "c.png")
    (tmp_path / "a.txt").write_text("a red square\n\n  a crimson   tile \n")
    (tmp_path / "b.txt").write_text("   \n")  # empty caption: the null caption
    ds = load_dataset(f"folder:{tmp_path}", size=8)
    assert ds.info["files"] == ["a.png", "b.jpg", "c.png"]
    assert ds.captions == [["a red square", "a crimson tile"], [], []]
    assert "2 of 3 images have no caption" in capsys.readouterr().err


def test_folder_without_captions_has_none(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("not a caption: no image uses sidecars")
    assert load_dataset(f"folder:{tmp_path}", size=8).captions is None


def test_folder_metadata_jsonl_with_classes_and_sidecars(tmp_path):
    _img(tmp_path / "cats" / "1.png")
    _img(tmp_path / "cats" / "2.png")
    _img(tmp_path / "dogs" / "3.png")
    (tmp_path / "metadata.jsonl").write_text(
        json.dumps({"file_name": "cats/1.png", "text": "a cat", "extra": 1}) + "\n\n"
        + json.dumps({"file_name": "dogs/3.png", "text": ["a dog", "a puppy"]}) + "\n"
        + json.dumps({"file_name": "cats/2.png", "text": None}) + "\n")
    (tmp_path / "dogs" / "metadata.jsonl").write_text(json.dumps({"file_name": "3.png", "text": "a good dog"}) + "\n")
    (tmp_path / "cats" / "1.txt").write_text("a tabby\n")
    ds = load_dataset(f"folder:{tmp_path}", size=8)
    assert ds.class_names == ["cats", "dogs"] and ds.labels.tolist() == [0, 0, 1]
    assert ds.captions == [["a cat", "a tabby"], [], ["a dog", "a puppy", "a good dog"]]


@pytest.mark.parametrize("line, message", [
    ('{"file_name": "a.png", "text": "ok"}\n{"file_name": "a.png", "text": "broken"',
     r"metadata.jsonl line 2 is not valid JSON"),
    ('{"file_name": "missing.png", "text": "x"}',
     r"metadata.jsonl line 1 has a caption for 'missing.png', which is not an image"),
    ('{"text": "no file"}', r'metadata.jsonl line 1 needs a string "file_name"'),
    ('{"file_name": "a.png", "text": 3}', r'metadata.jsonl line 1 needs .* "text" that is a string or a list'),
    ('["a.png", "x"]', r'metadata.jsonl line 1 needs a string "file_name"'),
])
def test_folder_metadata_errors_are_one_line(tmp_path, line, message):
    _img(tmp_path / "a.png")
    (tmp_path / "metadata.jsonl").write_text(line + "\n")
    with pytest.raises(UnmixError, match=message) as e:
        load_dataset(f"folder:{tmp_path}", size=8)
    assert "\n" not in str(e.value)


def test_folder_sidecar_without_image_is_an_error(tmp_path):
    _img(tmp_path / "cat1.png")
    (tmp_path / "cat1.txt").write_text("a cat")
    (tmp_path / "cat01.txt").write_text("a typo")
    with pytest.raises(UnmixError, match=r"caption file cat01.txt has no image beside it"):
        load_dataset(f"folder:{tmp_path}", size=8)


def test_folder_captions_follow_skipped_images(tmp_path):
    _img(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"not a png")
    (tmp_path / "metadata.jsonl").write_text(
        '{"file_name": "a.png", "text": "kept"}\n{"file_name": "b.png", "text": "skipped with its image"}\n')
    ds = load_dataset(f"folder:{tmp_path}", size=8)
    assert ds.info["files"] == ["a.png"] and ds.captions == [["kept"]]
