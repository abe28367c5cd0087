"""Stable Diffusion folders as they are found: text encoders written by transformers < 5 (keys under text_model.,
a level transformers 5 dropped) load to the same weights; single-file checkpoints are refused in one line."""
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_stable_diffusion import save_pipeline, tiny_parts

import unmix
from unmix.errors import UnmixError

pytest.importorskip("diffusers")


def test_sd_text_encoder_with_text_model_keys_loads_the_same_weights(tmp_path):
    save_pipeline(tiny_parts(tmp_path), tmp_path / "sd")
    base = unmix.load(tmp_path / "sd").text_encoder().model.state_dict()
    f = tmp_path / "sd" / "text_encoder" / "model.safetensors"
    state = load_file(f)
    save_file({k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in state.items()}, f)
    old = unmix.load(tmp_path / "sd").text_encoder().model.state_dict()
    assert set(old) == set(base) and all(torch.equal(old[k], base[k]) for k in base)


def test_sd_single_file_checkpoint_is_refused_in_one_line(tmp_path):
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}, tmp_path / "v1-5.safetensors")
    with pytest.raises(UnmixError, match="single-file checkpoint") as e:
        unmix.load(tmp_path / "v1-5.safetensors")
    assert "\n" not in str(e.value)
