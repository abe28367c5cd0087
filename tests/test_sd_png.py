"""Every single PNG `unmix sample` writes carries what made it (unmix.adapters.png_params): A1111's `parameters` chunk,
parsed as A1111 documents it, and unmix's record, from which `unmix sample --from-png FILE` redraws the image bit for
bit: a tiny random Stable Diffusion model with a prompt, a negative prompt, an A1111 sampler name and a LoRA, drawn in
batches; and a tiny digits model with labels."""
import json

import numpy as np
import pytest
import torch
from hostile_fixtures import assert_one_error, cli, tiny_run
from PIL import Image
from safetensors.torch import save_file
from test_stable_diffusion import PROMPT, save_pipeline, tiny_parts

from unmix.adapters.png_params import parse_parameters

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd-png")
    save_pipeline(tiny_parts(tmp), tmp / "sd")
    g = torch.Generator().manual_seed(0)
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"  # cross-attention: the prompt's way in
    save_file({f"{name}.lora_A.weight": torch.randn(2, 32, generator=g),
               f"{name}.lora_B.weight": torch.randn(8, 2, generator=g)}, tmp / "style.safetensors")
    return tmp


def _texts(path):
    with Image.open(path) as img:
        img.load()
        return dict(img.text), np.asarray(img).copy()


def _redraw(capsys, png, out, *extra):
    code, _, err = cli(capsys, "sample", *extra, "--from-png", png, "--out", out, "--save-npy", out / "x.npy")
    assert code == 0, err
    (single,) = [p for p in out.glob("*.png") if p.name != "grid.png"]
    return np.load(out / "x.npy"), single


def test_sd_png_parameters_and_from_png_redraw_bit_for_bit(sd, tmp_path, capsys):
    lora = sd / "style.safetensors"
    code, _, err = cli(capsys, "sample", sd / "sd", "--prompt", PROMPT, "--negative-prompt", "a mat", "--guidance", "6",
                       "--sampler", "DPM++ 2M Karras", "--nfe", "4", "--n", "3", "--batch-size", "2", "--seed", "5",
                       "--lora", f"{lora}:0.5", "--out", tmp_path / "out", "--save-npy", tmp_path / "x.npy")
    assert code == 0, err
    x = np.load(tmp_path / "x.npy")
    for i, name in ((1, "0001_seed6.png"), (2, "0002_seed7.png")):  # second of the first batch; alone in the second
        texts, pixels = _texts(tmp_path / "out" / name)
        params = parse_parameters(texts["parameters"])
        assert params["prompt"] == PROMPT and params["negative_prompt"] == "a mat"
        assert (params["Steps"], params["Sampler"], params["CFG scale"], params["Seed"], params["Size"]) == \
            ("4", "DPM++ 2M Karras", "6.0", str(5 + i), "16x16")
        assert params["Model"] == "sd" and len(params["Model hash"]) == 10 and params["Lora hashes"].startswith("style: ")
        record = json.loads(texts["unmix"])
        assert record["batch"] == ([5, 6] if i == 1 else [7]) and record["loras"][0]["scale"] == 0.5
        again, single = _redraw(capsys, tmp_path / "out" / name, tmp_path / f"redrawn{i}")
        assert np.array_equal(again[0], x[i])  # bit for bit
        texts_again, pixels_again = _texts(single)
        assert np.array_equal(pixels_again, pixels) and texts_again == texts
    plain = _redraw(capsys, tmp_path / "out" / "0002_seed7.png", tmp_path / "plain", "--threads", "1")[0]
    assert np.array_equal(plain, x[2:])  # an explicit --threads does not change a redraw either


def test_digits_png_redraws_bit_for_bit_with_its_label(tmp_path, capsys):
    run = tiny_run(tmp_path, cond="label")
    code, _, err = cli(capsys, "sample", run, "--label", "3", "--n", "2", "--nfe", "3", "--seed", "1",
                       "--out", tmp_path / "out", "--save-npy", tmp_path / "x.npy")
    assert code == 0, err
    texts, _ = _texts(tmp_path / "out" / "0001_seed2.png")
    params = parse_parameters(texts["parameters"])
    assert params["Seed"] == "2" and params["Size"] == "8x8" and params["NFE"] == "3"
    again, _ = _redraw(capsys, tmp_path / "out" / "0001_seed2.png", tmp_path / "redrawn")
    assert np.array_equal(again[0], np.load(tmp_path / "x.npy")[1])


def test_parse_parameters_reads_a1111s_documented_format():
    text = ('masterpiece, a cat,\non a mat\nNegative prompt: blurry, lowres\nSteps: 20, Sampler: DPM++ 2M Karras, '
            'CFG scale: 7, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, '
            'Lora hashes: "style: 0f9e8d7c6b, ink: 0123456789", Version: v1.9.4')
    p = parse_parameters(text)
    assert p["prompt"] == "masterpiece, a cat,\non a mat" and p["negative_prompt"] == "blurry, lowres"
    assert p["Steps"] == "20" and p["Size"] == "512x768" and p["Model hash"] == "6ce0161689"
    assert p["Lora hashes"] == "style: 0f9e8d7c6b, ink: 0123456789" and p["Version"] == "v1.9.4"
    assert parse_parameters("just a prompt") == {"prompt": "just a prompt", "negative_prompt": ""}


def test_from_png_without_a_record_is_one_line(tmp_path, capsys):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    code, _, err = cli(capsys, "sample", "--from-png", tmp_path / "plain.png")
    assert_one_error(code, err, "no generation record")
    (tmp_path / "fake.png").write_bytes(b"not a png")
    code, _, err = cli(capsys, "sample", "--from-png", tmp_path / "fake.png")
    assert_one_error(code, err, "not a readable PNG")
