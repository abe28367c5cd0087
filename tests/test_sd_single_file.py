"""A Stable Diffusion single-file checkpoint (the original CompVis / A1111 key layout) loads as the same model as
its diffusers folder: a tiny random pipeline is saved both ways (the single file written here with the inverse of
diffusers' key renaming, from the published layout) and the two unmix models must agree. Nothing is downloaded."""
import hashlib
import importlib.util
import re

import pytest
import torch
from safetensors.torch import save_file
from test_stable_diffusion import SD, diffusers_images, tiny_tokenizer, unmix_images

import unmix
from unmix.errors import UnmixError

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)
HAS_OPEN_CLIP = importlib.util.find_spec("open_clip") is not None


# -- a tiny SD 1-like / SD 2-like pipeline ------------------------------------------------------------
def tiny_pipeline(tmp, version):
    """A random pipeline whose untold settings (norm groups, heads, activations) are the published ones."""
    torch.manual_seed(0 if version == "sd1" else 1)
    tokenizer = tiny_tokenizer(tmp / f"vocab-{version}")
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=1,
        max_position_embeddings=16, hidden_act="quick_gelu" if version == "sd1" else "gelu",
        bos_token_id=end - 1, eos_token_id=end, pad_token_id=end)).eval()
    sd2 = version == "sd2"
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(64, 128) if sd2 else (32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, attention_head_dim=[1, 2] if sd2 else 8, use_linear_projection=sd2).eval()
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4, sample_size=16).eval()
    scheduler = diffusers.DDIMScheduler(**SD, prediction_type="v_prediction" if sd2 else "epsilon")
    return diffusers.StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer,
                                             scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                             requires_safety_checker=False)


# -- diffusers names -> the original layout (the inverse of what the reader undoes) ------------------------
RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
          "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}
UNET_TOP = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
            "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _resnet(rest):
    name, _, tail = rest.rpartition(".")
    return f"{RESNET.get(name, name)}.{tail}"


def unet_to_ldm(unet):
    per, ldm = unet.config.layers_per_block + 1, {}
    attends = [hasattr(b, "attentions") for b in unet.up_blocks]
    for k, v in unet.state_dict().items():
        top = k.rsplit(".", 1)
        if top[0] in UNET_TOP:
            ldm[f"{UNET_TOP[top[0]]}.{top[1]}"] = v
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", k):
            i, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if part == "downsamplers":
                ldm[f"input_blocks.{(i + 1) * per}.0.op.{rest.removeprefix('conv.')}"] = v
            else:
                ldm[f"input_blocks.{1 + i * per + j}.{0 if part == 'resnets' else 1}."
                    f"{_resnet(rest) if part == 'resnets' else rest}"] = v
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", k):
            i, part, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            if part == "upsamplers":
                ldm[f"output_blocks.{i * per + per - 1}.{2 if attends[i] else 1}.{rest}"] = v
            else:
                ldm[f"output_blocks.{i * per + j}.{0 if part == 'resnets' else 1}."
                    f"{_resnet(rest) if part == 'resnets' else rest}"] = v
        elif m := re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", k):
            idx = 1 if m[1] == "attentions" else 2 * int(m[2])
            ldm[f"middle_block.{idx}.{_resnet(m[3]) if m[1] == 'resnets' else m[3]}"] = v
        else:
            raise AssertionError(f"unmapped UNet key {k}")
    return {f"model.diffusion_model.{k}": v for k, v in ldm.items()}


def vae_to_ldm(vae):
    levels, ldm = len(vae.config.block_out_channels), {}
    for k, v in vae.state_dict().items():
        k2 = k.replace("conv_shortcut", "nin_shortcut")
        if m := re.match(r"(encoder|decoder)\.(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.*)", k2):
            side, kind, i, part, j, rest = m[1], m[2], int(m[3]), m[4], int(m[5]), m[6]
            level = i if kind == "down" else levels - 1 - i
            inner = f"block.{j}" if part == "resnets" else ("downsample" if kind == "down" else "upsample")
            ldm[f"{side}.{kind}.{level}.{inner}.{rest}"] = v
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.*)", k2):
            ldm[f"{m[1]}.mid.block_{int(m[2]) + 1}.{m[3]}"] = v
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.*)\.(weight|bias)", k2):
            ldm[f"{m[1]}.mid.attn_1.{VAE_ATTN[m[2]]}.{m[3]}"] = v[:, :, None, None] if v.ndim == 2 else v
        else:
            ldm[k2.replace("conv_norm_out", "norm_out")] = v
    return {f"first_stage_model.{k}": v for k, v in ldm.items()}


def text_state(text):
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.state_dict().items()
            if not k.endswith("position_ids")}


def clip_to_ldm(text):
    return {f"cond_stage_model.transformer.{k}": v for k, v in text_state(text).items()}


def open_clip_to_ldm(text):
    """OpenCLIP's names, with q/k/v fused, a projection, and a 24th block (index 23) that SD 2 never reads."""
    s, p = text_state(text), "cond_stage_model.model."
    out = {p + "token_embedding.weight": s["text_model.embeddings.token_embedding.weight"],
           p + "positional_embedding": s["text_model.embeddings.position_embedding.weight"],
           p + "ln_final.weight": s["text_model.final_layer_norm.weight"],
           p + "ln_final.bias": s["text_model.final_layer_norm.bias"],
           p + "text_projection": torch.randn(text.config.hidden_size, 16), p + "logit_scale": torch.tensor(4.6)}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}
    for i in range(text.config.num_hidden_layers):
        block, layer = f"{p}transformer.resblocks.{i}.", f"text_model.encoder.layers.{i}."
        for new, old in names.items():
            for t in ("weight", "bias"):
                out[f"{block}{old}.{t}"] = s[f"{layer}{new}.{t}"]
        for t in ("weight", "bias"):
            out[f"{block}attn.in_proj_{t}"] = torch.cat([s[f"{layer}self_attn.{q}_proj.{t}"] for q in "qkv"])
    for k in [k for k in out if ".resblocks.0." in k]:
        out[k.replace(".resblocks.0.", ".resblocks.23.")] = torch.randn_like(out[k])
    return out


def write_single_file(pipe, folder, version):
    """The pipeline as one original-layout .safetensors (+ its tokenizer/ folder beside it, a tiny vocabulary)."""
    state = {**unet_to_ldm(pipe.unet), **vae_to_ldm(pipe.vae),
             **(clip_to_ldm if version == "sd1" else open_clip_to_ldm)(pipe.text_encoder),
             "alphas_cumprod": torch.ones(1000)}  # an LDM buffer, as real files carry
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, folder / f"{version}.safetensors")
    pipe.tokenizer.save_pretrained(folder / "tokenizer")
    return folder / f"{version}.safetensors"


@pytest.fixture(scope="module", params=["sd1", "sd2"])
def pair(request, tmp_path_factory):
    """(single-file model, folder model, file, pipeline, its folder) for one tiny pipeline."""
    tmp = tmp_path_factory.mktemp(request.param)
    pipe = tiny_pipeline(tmp, request.param)
    pipe.save_pretrained(tmp / "folder")
    f = write_single_file(pipe, tmp / "file", request.param)
    return unmix.load(f), unmix.load(tmp / "folder"), f, pipe, tmp / "folder"


def test_single_file_has_the_folders_weights(pair):
    single, folder, *_ = pair
    for a, b in ((single.net.unet, folder.net.unet), (single.encoder.vae, folder.encoder.vae),
                 (single.text_encoder().model, folder.text_encoder().model)):
        sa, sb = a.state_dict(), b.state_dict()
        assert set(sa) == set(sb) and all(torch.equal(sa[k], sb[k]) for k in sb)
    for key in ("block_out_channels", "layers_per_block", "attention_head_dim", "use_linear_projection",
                "cross_attention_dim", "down_block_types", "up_block_types", "in_channels", "out_channels"):
        a, b = single.net.unet.config[key], folder.net.unet.config[key]
        assert (list(a), a) == (list(b), b) if isinstance(b, (list, tuple)) else a == b, key


def test_single_file_samples_like_the_folder(pair):
    single, folder, f, pipe, where = pair
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    cond = folder.text_encoder().encode(["a cat on a mat"])
    torch.testing.assert_close(single.text_encoder().encode(["a cat on a mat"]).tokens, cond.tokens, atol=0, rtol=0)
    with torch.no_grad():
        c = torch.full((2,), 0.5)
        d = float((single.net(z, c, cond) - folder.net(z, c, cond)).abs().max())
    a, b = unmix_images(single, "EulerDiscreteScheduler", z), unmix_images(folder, "EulerDiscreteScheduler", z)
    ref = diffusers_images(pipe, where, "EulerDiscreteScheduler", z)  # diffusers' own pipeline
    print(f"{f.stem}: vs the folder: UNet max abs diff {d:.1e}, images {float((a - b).abs().max()):.1e}; "
          f"vs StableDiffusionPipeline: images {float((a - ref).abs().max()):.1e}")
    assert d <= 1e-5
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    torch.testing.assert_close(a, ref, atol=1e-4, rtol=0)
    assert single.data["sha256"] == hashlib.sha256(f.read_bytes()).hexdigest()


def test_sd2_file_is_v_prediction_unless_told(pair, tmp_path):
    single, folder, f, *_ = pair
    want = "v" if f.stem == "sd2" else "eps"
    assert single.recipe.parameterization == want == folder.recipe.parameterization
    assert single.recipe == folder.recipe
    if f.stem == "sd2":  # an SD 2 base model is told so
        base = unmix.load(f, schedule={"prediction_type": "epsilon"})
        assert base.recipe.parameterization == "eps" and base.net.unet.config.sample_size == 64
        assert single.net.unet.config.sample_size == 96  # 768 px


def test_pickle_and_foreign_files_are_one_line(tmp_path):
    (tmp_path / "v1-5.ckpt").write_bytes(b"not read")
    with pytest.raises(UnmixError, match="never unpickles") as e:
        unmix.load(tmp_path / "v1-5.ckpt")
    assert "\n" not in str(e.value)
    save_file({"encoder.layer.0.weight": torch.zeros(2, 2)}, tmp_path / "bert.safetensors")
    with pytest.raises(UnmixError, match="not a Stable Diffusion 1.x / 2.x single-file checkpoint") as e:
        unmix.load(tmp_path / "bert.safetensors")
    assert "\n" not in str(e.value)
    save_file({"conditioner.embedders.0.transformer.x": torch.zeros(1)}, tmp_path / "xl.safetensors")
    with pytest.raises(UnmixError, match="SDXL"):
        unmix.load(tmp_path / "xl.safetensors")


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip (its CLIP vocabulary) is not installed")
def test_clip_tokenizer_from_open_clips_vocabulary():
    from unmix.adapters.sd_single_file import clip_tokenizer

    tokenizer = clip_tokenizer()
    assert len(tokenizer) == 49408
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip_tokenizer("!")(["a cat"], padding="max_length", max_length=6).input_ids == [[49406, 320, 2368, 49407, 0, 0]]


@pytest.mark.skipif(not HAS_OPEN_CLIP, reason="open_clip (its CLIP vocabulary) is not installed")
def test_tiny_vocabulary_without_its_tokenizer_folder_is_one_line(tmp_path):
    pipe = tiny_pipeline(tmp_path, "sd1")
    f = write_single_file(pipe, tmp_path / "file", "sd1")
    for p in (f.parent / "tokenizer").iterdir():
        p.unlink()
    (f.parent / "tokenizer").rmdir()
    with pytest.raises(UnmixError, match="tokenizer/ folder") as e:
        unmix.load(f)
    assert "\n" not in str(e.value)


def test_missing_open_clip_names_its_install(monkeypatch):
    from unmix.adapters import sd_single_file

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "open_clip" else real(name, *a))
    with pytest.raises(UnmixError, match="pip install --no-deps open-clip-torch") as e:
        sd_single_file.clip_tokenizer.__wrapped__()
    assert "\n" not in str(e.value)
