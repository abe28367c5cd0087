"""The emoji recipe a diffusers user would write, trained for a wall-clock budget: benchmarks/emoji_budget.py's
"diffusers" candidate, beside unmix's pixel preset and latent recipe.

As diffusers' train_unconditional example, sized down for 32 px and one CPU thread: UNet2DModel with widths
64/128/128, two blocks per level and self-attention at 8x8 (6.5M parameters; the pixel preset has 4.96M),
DDPMScheduler with 1000 linear steps and epsilon prediction, MSE, AdamW at 1e-4 (betas 0.95/0.999, weight decay
1e-6) with 500 warm-up steps and then a constant rate (the example's cosine needs the step count, which a time
budget does not give), gradient clipping at 1, EMA as the example (0.9999 with warm-up), batch 16. No flips
(emoji are not mirror-symmetric). Sampled with DPMSolverMultistepScheduler (DPM-Solver++(2M)) at 32 steps, the
same 32 network calls as unmix's rows.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

BATCH = 16
STEPS = 32


def emoji_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                       block_out_channels=(64, 128, 128),
                       down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))


def ddpm_scheduler():
    """The example's training noise schedule: 1000 linear steps, epsilon prediction, x0 clipped when sampling."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train(images: torch.Tensor, minutes: float, seed: int = 0, log=print):
    """(EMA UNet2DModel, steps) after `minutes` of wall clock on images [N, 3, 32, 32] in [-1, 1]."""
    from diffusers import UNet2DModel
    from diffusers.optimization import get_constant_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    torch.manual_seed(seed)
    unet = emoji_unet()
    scheduler = ddpm_scheduler()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    lr = get_constant_schedule_with_warmup(opt, num_warmup_steps=500)
    ema = EMAModel(unet.parameters(), decay=0.9999, use_ema_warmup=True, inv_gamma=1.0, power=3 / 4,
                   model_cls=UNet2DModel, model_config=unet.config)
    g = torch.Generator().manual_seed(seed)
    start, step = time.monotonic(), 0
    while time.monotonic() - start < minutes * 60:
        x0 = images[torch.randint(0, len(images), (BATCH,), generator=g)]
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, 1000, (BATCH,), generator=g)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lr.step()
        opt.zero_grad()
        ema.step(unet.parameters())
        step += 1
        if step % 200 == 0:
            log(f"diffusers step {step} loss {loss.item():.4f} ({(time.monotonic() - start) / 60:.1f} min)")
    ema.copy_to(unet.parameters())
    return unet.eval(), step


def save_pipeline(unet, folder) -> None:
    """The trained network as the DDPMPipeline folder a diffusers user has (safetensors), so it can be sampled
    again later, by diffusers or by `unmix sample FOLDER` (which keeps the scheduler's clip_sample)."""
    from diffusers import DDPMPipeline

    DDPMPipeline(unet=unet, scheduler=ddpm_scheduler()).save_pretrained(folder)


@torch.no_grad()
def sample(unet, n: int, seed: int = 0, batch: int = 250) -> torch.Tensor:
    """n images in [-1, 1] with DPM-Solver++(2M) at 32 steps, as a diffusers user samples."""
    from diffusers import DPMSolverMultistepScheduler

    out = []
    for lo in range(0, n, batch):
        sched = DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="linear",
                                            algorithm_type="dpmsolver++", solver_order=2)
        sched.set_timesteps(STEPS)
        g = torch.Generator().manual_seed(seed + lo)
        x = torch.randn((min(batch, n - lo), 3, 32, 32), generator=g)
        for t in sched.timesteps:
            x = sched.step(unet(x, t).sample, t, x).prev_sample
        out.append(x.clamp(-1, 1))
    return torch.cat(out)
