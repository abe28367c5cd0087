"""Seconds per denoising step and peak memory: unmix vs diffusers on a Stable Diffusion 1.5-sized model.

    python benchmarks/sd_speed.py             # the SD 1.5 architecture (random weights from its config), 512x512
    python benchmarks/sd_speed.py --smoke     # a tiny config, in seconds (CI)

Both sides get the same folder (StableDiffusionPipeline.save_pretrained of random weights: nothing downloaded),
the same prompt, guidance 7.5 (a doubled batch per step) and DDIM; unmix reads it with unmix.load and samples with
Model.sample, diffusers with its own pipeline. A step's time is the difference between a run of `--steps` steps
and a run of 1 step, divided by the extra steps, so text encoding and the VAE decode drop out. Each side runs in
its own process, whose peak resident memory (ru_maxrss) is reported.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPT = "a photograph of an astronaut riding a horse"
# Stable Diffusion 1.5's architecture (its unet/, vae/ and text_encoder/ config.json), weights left random.
SD15_UNET = dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2, down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=4, sample_size=512)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                 max_position_embeddings=77, hidden_act="quick_gelu")
TINY_UNET = dict(sample_size=8, cross_attention_dim=32, attention_head_dim=2, block_out_channels=(8, 16), norm_num_groups=4,
                 layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
TINY_VAE = dict(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2, norm_num_groups=4,
                up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, sample_size=16)
TINY_TEXT = dict(vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=77)


def byte_tokenizer(folder: Path, max_length: int):
    """A CLIP tokenizer on a byte-level vocabulary (every byte, alone and word-final): prompts only need ids."""
    from transformers import CLIPTokenizer

    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    chars = [chr(b if b in keep else next(extra)) for b in range(256)]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars])}
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def build(folder: Path, smoke: bool) -> None:
    import diffusers
    import transformers

    torch.manual_seed(0)
    unet_cfg, vae_cfg, text_cfg = (TINY_UNET, TINY_VAE, TINY_TEXT) if smoke else (SD15_UNET, SD15_VAE, SD15_TEXT)
    tokenizer = byte_tokenizer(folder / "vocab", text_cfg["max_position_embeddings"])
    end = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text_cfg, bos_token_id=end - 1, eos_token_id=end,
                                                                  pad_token_id=end))
    pipe = diffusers.StableDiffusionPipeline(
        unet=diffusers.UNet2DConditionModel(**unet_cfg), vae=diffusers.AutoencoderKL(**vae_cfg), text_encoder=text,
        tokenizer=tokenizer, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        scheduler=diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                          steps_offset=1, clip_sample=False, set_alpha_to_one=True))
    pipe.save_pretrained(folder / "sd")


def measure(side: str, folder: str, steps: int, threads: int) -> tuple[float, float]:
    """(seconds per step, peak RSS in MiB) of one side; run in a process of its own (`--measure`)."""
    torch.set_num_threads(threads)
    if side == "unmix":
        import unmix

        model = unmix.load(folder)

        def run(n):
            sigmas = model.recipe.pipeline_sigmas(n)
            model.sample(1, sampler="ddim", nfe=n, sigmas=sigmas, prompts=PROMPT, guidance=7.5)
    else:
        import diffusers

        pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)

        def run(n):
            pipe(PROMPT, num_inference_steps=n, guidance_scale=7.5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        run(1)  # warm-up
        t0 = time.perf_counter()
        run(1)
        one = time.perf_counter() - t0
        t0 = time.perf_counter()
        run(steps)
        many = time.perf_counter() - t0
    return (many - one) / (steps - 1), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny config in seconds")
    parser.add_argument("--steps", type=int, default=None, help="steps of the long run (default 5, smoke 3)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--measure", nargs=2, metavar=("SIDE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure, args.steps, args.threads)))
        return 0
    steps = args.steps or (3 if args.smoke else 5)
    if steps < 2:
        parser.error("--steps must be >= 2")
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), args.smoke)
        size = "tiny 16x16" if args.smoke else "SD 1.5, 512x512"
        print(f"{size}, DDIM, guidance 7.5 (batch 2 per step), {args.threads} threads, CPU")
        print(f"{'':10s} {'s/step':>10s} {'peak MiB':>10s}")
        for side in ("unmix", "diffusers"):
            cmd = [sys.executable, __file__, "--measure", side, str(Path(tmp) / "sd"), "--steps", str(steps),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            per_step, peak = json.loads(out.strip().splitlines()[-1])
            print(f"{side:10s} {per_step:10.4f} {peak:10.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
