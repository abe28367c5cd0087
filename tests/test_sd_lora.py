"""LoRA files on Stable Diffusion models (unmix.adapters.lora): merged weights equal diffusers' load_lora_weights +
fuse_lora(lora_scale=), and so do the images; unloading gives back the original bits; a bad file is one line.

Everything is built in the test: a tiny random SD folder (tests/test_stable_diffusion.py) and LoRA files, made with
peft and saved by diffusers' own StableDiffusionPipeline.save_lora_weights, or written by hand in kohya's naming.
"""
import copy

import pytest
import torch
from hostile_fixtures import assert_one_error, cli
from safetensors.torch import save_file
from test_stable_diffusion import PROMPT, diffusers_images, save_pipeline, tiny_parts, unmix_images

import unmix
from unmix.adapters.lora import apply_loras, parse_lora
from unmix.errors import UnmixError

diffusers = pytest.importorskip("diffusers")
SCALE = 0.7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sd-lora")
    pipe = save_pipeline(tiny_parts(tmp), tmp / "sd")
    return pipe, tmp


def _peft_lora(pipe, folder):
    """A diffusers-format LoRA file of rank 4, alpha 8 (so scale 2 per unit) on the UNet's attention and the text
    encoder's, with random up and down weights (peft's init_lora_weights=False)."""
    peft = pytest.importorskip("peft")
    from peft.utils import get_peft_model_state_dict

    unet, text = copy.deepcopy(pipe.unet), copy.deepcopy(pipe.text_encoder)
    torch.manual_seed(11)
    unet_cfg = peft.LoraConfig(r=4, lora_alpha=8, init_lora_weights=False,
                               target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_in", "conv1"])
    text_cfg = peft.LoraConfig(r=2, lora_alpha=2, init_lora_weights=False, target_modules=["q_proj", "v_proj"])
    unet.add_adapter(unet_cfg)
    text.add_adapter(text_cfg)
    diffusers.StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), text_encoder_lora_layers=get_peft_model_state_dict(text),
        unet_lora_adapter_metadata=unet_cfg.to_dict(), text_encoder_lora_adapter_metadata=text_cfg.to_dict())
    return folder / "pytorch_lora_weights.safetensors"


@torch.no_grad()
def test_sd_lora_matches_diffusers_fuse_lora(tiny, tmp_path):
    pipe, tmp = tiny
    lora = _peft_lora(pipe, tmp_path / "lora")
    ref = diffusers.StableDiffusionPipeline.from_pretrained(tmp / "sd", safety_checker=None)
    ref.load_lora_weights(str(lora))
    ref.fuse_lora(lora_scale=SCALE)
    ref.unload_lora_weights()  # keeps the fused weights, drops the LoRA layers
    model = unmix.load(tmp / "sd")
    before = {k: v.clone() for k, v in model.net.unet.state_dict().items()}
    merged = apply_loras(model, [f"{lora}:{SCALE}"])
    worst = 0.0
    for mine, theirs in ((model.net.unet, ref.unet), (model.text_encoder().model, ref.text_encoder)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert set(a) == set(b)
        worst = max(worst, max(float((a[k] - b[k]).abs().max()) for k in a))
    print(f"LoRA weights: max abs diff to diffusers' fuse_lora {worst:.2e}")
    assert worst < 1e-6
    changed = [k for k in before if not torch.equal(before[k], model.net.unet.state_dict()[k])]
    assert len(changed) >= 10 and any("conv1" in k for k in changed)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    want = diffusers_images(ref, tmp / "sd", "EulerDiscreteScheduler", z)
    got = unmix_images(model, "EulerDiscreteScheduler", z)
    print(f"LoRA images: max abs diff {float((got - want).abs().max()):.2e}")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    merged.unload()
    assert all(torch.equal(before[k], v) for k, v in model.net.unet.state_dict().items())


@torch.no_grad()
def test_sd_kohya_lora_is_scale_alpha_over_rank_up_down_and_unloads_to_the_bits(tiny, tmp_path):
    """Two kohya-named LoRAs (a linear layer with alpha, a 3 x 3 convolution without) stack, each adding exactly
    scale x alpha / rank x up @ down; unload gives back the original bits."""
    _, tmp = tiny
    model = unmix.load(tmp / "sd")
    unet, text = model.net.unet, model.text_encoder().model
    g = torch.Generator().manual_seed(0)
    q = unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q
    conv = unet.up_blocks[0].resnets[0].conv1
    te = getattr(text, "text_model", text).encoder.layers[1].mlp.fc1  # transformers 5 has no text_model level
    a = {"lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.randn(2, 8, generator=g),
         "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.randn(8, 2, generator=g),
         "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.alpha": torch.tensor(1.0),
         "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight": torch.randn(3, 32, generator=g),
         "lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight": torch.randn(37, 3, generator=g)}
    cin, cout = conv.weight.shape[1], conv.weight.shape[0]
    b = {"lora_unet_up_blocks_0_resnets_0_conv1.lora_down.weight": torch.randn(4, cin, 3, 3, generator=g),
         "lora_unet_up_blocks_0_resnets_0_conv1.lora_up.weight": torch.randn(cout, 4, 1, 1, generator=g)}
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    originals = [m.weight.clone() for m in (q, conv, te)]
    merged = apply_loras(model, [(tmp_path / "a.safetensors", 0.5), (tmp_path / "b.safetensors", 2.0)])
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    want_q = originals[0] + (a[f"{key}.lora_up.weight"] @ a[f"{key}.lora_down.weight"]) * (0.5 * 1.0 / 2)
    want_te = originals[2] + (a["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_up.weight"]
                              @ a["lora_te_text_model_encoder_layers_1_mlp_fc1.lora_down.weight"]) * 0.5
    up, down = (b[f"lora_unet_up_blocks_0_resnets_0_conv1.lora_{r}.weight"] for r in ("up", "down"))
    want_conv = originals[1] + torch.einsum("or,rikl->oikl", up[:, :, 0, 0], down) * 2.0
    for module, want in ((q, want_q), (te, want_te), (conv, want_conv)):
        torch.testing.assert_close(module.weight, want, atol=1e-6, rtol=1e-6)
    assert [lo["scale"] for lo in merged.loras] == [0.5, 2.0] and len(merged.loras[0]["sha256"]) == 64
    merged.unload()
    assert all(torch.equal(m.weight, o) for m, o in zip((q, conv, te), originals))


def test_parse_lora():
    assert parse_lora("a/b.safetensors:0.8") == (parse_lora("a/b.safetensors")[0], 0.8)
    assert parse_lora("C:/x/style.safetensors")[1] == 1.0  # a drive letter is not a scale


def test_sd_bad_lora_files_are_one_line_exit_2(tiny, tmp_path, capsys):
    _, tmp = tiny
    (tmp_path / "pickle.ckpt").write_bytes(b"\x80\x04not read")
    save_file({"model.diffusion.weight": torch.zeros(2)}, tmp_path / "keys.safetensors")
    save_file({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 99),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(8, 2)},
              tmp_path / "shape.safetensors")
    save_file({"unet.mid_block.nowhere.lora_A.weight": torch.zeros(2, 8),
               "unet.mid_block.nowhere.lora_B.weight": torch.zeros(8, 2)}, tmp_path / "module.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    cases = {"pickle.ckpt": "never unpickles", "keys.safetensors": "not a LoRA key", "shape.safetensors": "another model",
             "module.safetensors": "does not have", "junk.safetensors": "not a readable safetensors",
             "missing.safetensors": "does not exist"}
    model = unmix.load(tmp / "sd")
    before = [v.clone() for v in model.net.unet.state_dict().values()]
    for name, words in cases.items():
        with pytest.raises(UnmixError, match=words):
            apply_loras(model, [(tmp_path / name, 1.0)])
        code, _, err = cli(capsys, "sample", tmp / "sd", "--prompt", PROMPT, "--nfe", "2", "--n", "1",
                           "--lora", f"{tmp_path / name}:0.5", "--out", tmp_path / f"out-{name}")
        assert_one_error(code, err, words)
    assert all(torch.equal(a, b) for a, b in zip(before, model.net.unet.state_dict().values()))  # nothing half-merged
