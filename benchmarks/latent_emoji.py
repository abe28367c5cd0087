"""Latent diffusion on emoji within a CPU budget: an autoencoder first, then a U-Net on its latents, both inside
the same minutes; measured like the pixel preset (FD / precision / recall in the emoji feature space, 500
samples, iPNDM 32 NFE, seeds 0..499).

Both stages run through the library's own training step (unmix.training.trainer.train_step: AdamW with warm-up, clipping,
EMA) with the objectives the trainer uses (unmix.latent.AutoencoderObjective, then the EDM denoising loss on the
scaled latents); this file only decides the recipe and when to stop. The clock is this process's CPU time at one
thread (`--clock wall` for wall-clock), so that runs on a shared machine are comparable with each other:

    python benchmarks/latent_emoji.py run f4c4 --minutes 30         # both stages, measure, grid, result.json
    python benchmarks/latent_emoji.py autoencoder ae6 --set ae_minutes=6        # first stage alone, reusable
    python benchmarks/latent_emoji.py run try1 --minutes 10 --ae ae6 --set latent_lr=1e-3   # its minutes count
    python benchmarks/latent_emoji.py autoencoder f4c4 --holdout    # on 90%: held-out PSNR and a grid
    python benchmarks/latent_emoji.py floor                         # FD of real emoji and of 500 of them
    python benchmarks/latent_emoji.py report                        # table from runs/latent_emoji/*/result.json
    python benchmarks/latent_emoji.py export lat-b runs/emoji_latent   # a run as a Model folder for `unmix sample`
    python benchmarks/latent_emoji.py --smoke     # every command for seconds, 70 samples, in a temporary folder

The command line trains the same two stages into ordinary run folders (the trainer's presets "latent" and
unmix.latent.AUTOENCODER_* are this file's ae6 / lat-b settings; the clock there is wall time):

    unmix train-autoencoder --data emoji --out runs/emoji_ae --minutes 6
    unmix train --data emoji --latent runs/emoji_ae --out runs/emoji_latent --minutes 14
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load as load_tensors

from unmix.data import Dataset, load_dataset
from unmix.data.images import make_grid
from unmix.distributed import Dist
from unmix.encoders import AutoencoderEncoder, decode_latents, encode_images, latent_scale, reconstruction_metrics
from unmix.inpaint import holdout_split
from unmix.losses import Recipe
from unmix.metrics.quality import evaluate
from unmix.model import Model
from unmix.nets import build_net, net_config
from unmix.store.files import save_safetensors
from unmix.training.autoencoder import AutoencoderObjective
from unmix.training.config import TrainConfig
from unmix.training.log import StepStats
from unmix.training.objectives import DiffusionObjective
from unmix.training.trainer import TrainState, train_step

ROOT = Path("runs/latent_emoji")
N = 500  # samples measured, as the pixel preset's row
SAMPLER = "ipndm"  # as the pixel preset's row in the README (iPNDM, 32 NFE)
BASE = dict(
    size=32,
    # first stage: f = 4 (three levels), 4 latent channels
    ae_minutes=6.0, ae_channels=32, ae_mult=[1, 2, 2], ae_blocks=1, latent_channels=4,
    ae_batch=32, ae_lr=2e-3, ae_ema_kimg=2.0, edge_weight=1.0, kl_weight=1e-4,
    # second stage: a U-Net on 8x8 latents (the digits preset's shape, wider)
    unet_channels=64, unet_mult=[1, 2, 2], unet_blocks=2, unet_attn=[1, 2],
    latent_batch=64, latent_lr=2e-3, latent_ema_kimg=10.0, p_mean=-0.5, p_std=1.2,
)
CANDIDATES = {
    "f4c4": {},
}


def _now(clock: str) -> float:
    return time.process_time() if clock == "cpu" else time.monotonic()


def _train(net, objective, data: Dataset, cfg: TrainConfig, minutes: float, clock: str, label: str, marks=(),
           on_mark=None):
    """Train until `minutes` of the clock have passed; return the TrainState (its .ema is the result). At each
    of `marks` (minutes) call on_mark(state, minute) with the clock stopped."""
    state = TrainState.fresh(net, cfg)
    stats, start, d = StepStats("cpu"), _now(clock), Dist()
    marks = sorted(m for m in marks if m < minutes)
    while _now(clock) - start < minutes * 60:
        train_step(state, net, objective, data, cfg, d, stats)
        if state.step % 100 == 0:
            record = stats.reduce(d)
            print(f"{label} step {state.step} loss {record['loss']:.4f} "
                  f"({(_now(clock) - start) / 60:.1f} min)", flush=True)
        if marks and _now(clock) - start >= marks[0] * 60:
            paused = _now(clock)
            on_mark(state, marks.pop(0))
            start += _now(clock) - paused
    return state


def train_autoencoder(s: dict, images: torch.Tensor, clock: str, seed: int = 0):
    cfg = TrainConfig(batch_size=s["ae_batch"], lr=s["ae_lr"], ema_halflife_kimg=s["ae_ema_kimg"], seed=seed,
                      warmup_steps=100)
    ae = build_net(dict(kind="autoencoder", channels=s["ae_channels"], channel_mult=s["ae_mult"],
                        num_res_blocks=s["ae_blocks"], latent_channels=s["latent_channels"], image_size=s["size"]))
    objective = AutoencoderObjective.for_net(ae.config, edge_weight=s["edge_weight"], kl_weight=s["kl_weight"])
    data = Dataset("emoji", ((images + 1) * 127.5).round().to(torch.uint8))
    state = _train(ae, objective, data, cfg, s["ae_minutes"], clock, "autoencoder")
    ae = state.ema.eval()
    ae.config.latent_scale = latent_scale(ae, images)
    return ae, state


def train_latent(s: dict, latents: torch.Tensor, minutes: float, clock: str, seed: int = 0, marks=(), on_mark=None):
    recipe = Recipe.from_name("edm", sigma_data=1.0, p_mean=s["p_mean"], p_std=s["p_std"])
    cfg = TrainConfig(batch_size=s["latent_batch"], lr=s["latent_lr"], ema_halflife_kimg=s["latent_ema_kimg"],
                      seed=seed)
    net = build_net(dict(kind="unet", in_channels=latents.shape[1], channels=s["unet_channels"],
                         channel_mult=s["unet_mult"], num_res_blocks=s["unet_blocks"], attn_levels=s["unet_attn"],
                         noise_scale=recipe.noise_scale))
    state = _train(net, DiffusionObjective(recipe), Dataset("emoji-latents", latents), cfg, minutes, clock, "latent",
                   marks, on_mark and (lambda st, m: on_mark(st, m, recipe)))
    return state.ema.eval(), recipe, state


def as_model(ae, net, recipe: Recipe) -> Model:
    """The U-Net on the autoencoder's latents as an unmix Model of emoji."""
    return Model(net, recipe, load_dataset("emoji", ae.config.image_size).describe(), encoder=AutoencoderEncoder(ae))


def draw(ae, net, recipe: Recipe, n: int, seed: int = 0, nfe: int = 32, sampler: str = SAMPLER) -> torch.Tensor:
    """n decoded samples, sample i from seed + i: Model.sample."""
    return as_model(ae, net, recipe).sample(n, seed=seed, sampler=sampler, nfe=nfe, batch_size=250)


def _settings(name: str, changes: dict) -> dict:
    return {**BASE, **CANDIDATES.get(name, {}), **changes}


def _emoji(size: int) -> torch.Tensor:
    ds = load_dataset("emoji", size)
    return ds.batch(torch.arange(len(ds)))[0]


def save_net(net, path: Path, info: dict) -> None:
    save_safetensors(path, net.state_dict(), {"config": json.dumps(net_config(net)), "info": json.dumps(info)},
                     make_parents=True)


def load_net(path: Path):
    data = path.read_bytes()  # in memory, never mapped
    meta = json.loads(bytes(data[8:8 + int.from_bytes(data[:8], "little")]))["__metadata__"]
    net = build_net(json.loads(meta["config"]))
    net.load_state_dict(load_tensors(data))
    return net.eval(), json.loads(meta["info"])


def autoencoder(name: str, changes: dict, clock: str, holdout: bool) -> None:
    """The first stage alone: on every emoji (reusable by `run --ae NAME`), or with --holdout on 90% of them
    (inpaint.holdout_split) with PSNR on the held-out 10% and a grid of held-out originals (odd rows) over their
    reconstructions (even rows)."""
    torch.set_num_threads(1)
    s = _settings(name, changes)
    images = _emoji(s["size"])
    train_idx, held_idx = holdout_split(len(images)) if holdout else (torch.arange(len(images)), None)
    t0 = _now(clock)
    ae, state = train_autoencoder(s, images[train_idx], clock)
    minutes = (_now(clock) - t0) / 60
    out = ROOT / (f"{name}-holdout" if holdout else name)
    out.mkdir(parents=True, exist_ok=True)
    result = {"name": name, "settings": s, "clock": clock, "ae_minutes": minutes, "steps": state.step,
              "config": asdict(ae.config), "parameters": sum(p.numel() for p in ae.parameters()),
              "train": reconstruction_metrics(ae, images[train_idx])}
    shown = images[held_idx] if holdout else images[:64]
    recon = decode_latents(ae, encode_images(ae, shown))
    rows = [t for i in range(0, 64, 16) for t in (shown[i:i + 16], recon[i:i + 16])]
    make_grid(torch.cat(rows), nrow=16, scale=2).save(out / "recon.png")
    if holdout:
        result["held_out"] = reconstruction_metrics(ae, images[held_idx])
    else:
        result["recon_fd"] = evaluate(decode_latents(ae, encode_images(ae, images)), "emoji", 0)["fd"]
        save_net(ae, out / "autoencoder.safetensors", {"minutes": minutes, "steps": state.step})
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


def run(name: str, minutes: float, changes: dict, clock: str, ae_from: str | None, every: float = 0) -> None:
    """Both stages inside `minutes` (a reused first stage counts with the minutes it took), then measure; with
    `every`, also measure (clock stopped) each `every` minutes of the latent stage."""
    torch.set_num_threads(1)
    s = _settings(name, changes)
    out = ROOT / name
    out.mkdir(parents=True, exist_ok=True)
    images = _emoji(s["size"])
    t0 = _now(clock)
    if ae_from:
        ae, info = load_net(ROOT / ae_from / "autoencoder.safetensors")
        ae_minutes, ae_steps = info["minutes"], info["steps"]
    else:
        ae, ae_state = train_autoencoder(s, images, clock)
        ae_steps = ae_state.step
    latents = encode_images(ae, images)
    if not ae_from:
        ae_minutes = (_now(clock) - t0) / 60
        save_net(ae, out / "autoencoder.safetensors", {"minutes": ae_minutes, "steps": ae_steps})
    t1 = _now(clock)
    curve = []

    def mark(state, minute, recipe):
        m = evaluate(draw(ae, state.ema.eval(), recipe, N), "emoji", 0)
        curve.append({"latent_minutes": minute, "steps": state.step, **m})
        print(json.dumps(curve[-1]), flush=True)

    budget = minutes - ae_minutes - (t1 - t0) / 60
    marks = [every * k for k in range(1, int(budget / every) + 1)] if every else []
    net, recipe, lat_state = train_latent(s, latents, budget, clock, marks=marks, on_mark=mark)
    total = ae_minutes + (_now(clock) - t0) / 60
    save_net(net, out / "latent.safetensors", {"recipe": recipe.to_dict(), "steps": lat_state.step})
    x = draw(ae, net, recipe, N)
    metrics = evaluate(x, "emoji", 0)
    make_grid(x[:64], nrow=8, scale=2).save(out / "grid.png")
    result = {"name": name, "settings": s, "ae_from": ae_from, "clock": clock, "minutes": minutes,
              "ae_minutes": ae_minutes, "total_minutes": total, "ae_steps": ae_steps, "latent_steps": lat_state.step,
              "ae_parameters": sum(p.numel() for p in ae.parameters()),
              "unet_parameters": sum(p.numel() for p in net.parameters()),
              "latent_scale": ae.config.latent_scale, **reconstruction_metrics(ae, images),
              **metrics, "sampler": SAMPLER, "nfe": 32, "n": N, "curve": curve}
    (out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result), flush=True)


def finished(name: str) -> tuple:
    """(autoencoder, U-Net, recipe) of a finished run (its first stage its own, or the `--ae` one it reused)."""
    run_dir = ROOT / name
    ae_file = run_dir / "autoencoder.safetensors"
    if not ae_file.is_file():
        ae_file = ROOT / json.loads((run_dir / "result.json").read_text())["ae_from"] / "autoencoder.safetensors"
    net, info = load_net(run_dir / "latent.safetensors")
    return load_net(ae_file)[0], net, Recipe.from_dict(info["recipe"])


def measure(name: str, sampler: str, nfe: int) -> None:
    """Sample a finished run again with another sampler or step count."""
    torch.set_num_threads(1)
    x = draw(*finished(name), N, nfe=nfe, sampler=sampler)
    metrics = {**evaluate(x, "emoji", 0), "sampler": sampler, "nfe": nfe}
    make_grid(x[:64], nrow=8, scale=2).save(ROOT / name / f"grid-{sampler}-{nfe}.png")
    print(json.dumps(metrics), flush=True)


def export(name: str, out: str) -> None:
    """A finished run as an unmix Model folder (the U-Net, its recipe, a copy of the autoencoder): `unmix sample`,
    `eval`, `inpaint`, `edit` and `serve` read it like any trained run."""
    print(as_model(*finished(name)).save(out))


def floor() -> None:
    """How close real emoji come: all of them against themselves, and N drawn at random (the sample count)."""
    torch.set_num_threads(1)
    ds = load_dataset("emoji")
    images = ds.batch(torch.arange(len(ds)))[0]
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:N]
    print(json.dumps({"all": evaluate(images, "emoji"), f"random{N}": evaluate(images[pick], "emoji")}))


def report() -> None:
    rows = [json.loads(p.read_text()) for p in sorted(ROOT.glob("*/result.json")) if "latent_steps" in p.read_text()]
    print("| run | minutes (AE) | AE / U-Net params | steps AE / U-Net | recon PSNR | FD | precision | recall |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['minutes']:g} ({r['ae_minutes']:.1f}) | {r['ae_parameters'] / 1e6:.2f}M / "
              f"{r['unet_parameters'] / 1e6:.2f}M | {r['ae_steps']} / {r['latent_steps']} | {r['psnr']:.1f} dB | "
              f"{r['fd']:.1f} | {r['precision']:.2f} | {r['recall']:.2f} |")


def _changes(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in BASE:
            raise SystemExit(f"unknown setting {key}; valid: {', '.join(BASE)}")
        out[key] = json.loads(value) if not isinstance(BASE[key], list) else [int(v) for v in value.split(",") if v]
    return out


def smoke() -> None:
    """Every command for a second or two of training, on N = 70 samples, in a temporary folder (CI); skipped
    without the emoji pictures."""
    global ROOT, N
    from unmix.errors import UnmixError

    try:
        load_dataset("emoji")
    except UnmixError as e:
        return print(f"smoke skipped: {e}")
    with tempfile.TemporaryDirectory() as tmp:
        ROOT, N = Path(tmp), 70
        autoencoder("ae", {"ae_minutes": 0.02}, "cpu", holdout=False)
        autoencoder("ae", {"ae_minutes": 0.02}, "cpu", holdout=True)
        run("tiny", 0.2, {"unet_channels": 16, "unet_blocks": 1}, "cpu", "ae", every=0.03)
        measure("tiny", "euler", 4)
        export("tiny", f"{tmp}/model")
        floor()
        report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every command at toy size in a temporary folder (CI)")
    sub = parser.add_subparsers(dest="cmd")
    for cmd in ("run", "autoencoder"):
        p = sub.add_parser(cmd)
        p.add_argument("name")
        p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
        p.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
        if cmd == "run":
            p.add_argument("--minutes", type=float, default=30.0)
            p.add_argument("--ae", help="reuse the first stage of `autoencoder NAME` (its minutes count)")
            p.add_argument("--every", type=float, default=0, help="also measure every this many latent minutes")
        else:
            p.add_argument("--holdout", action="store_true", help="train on 90%%, report held-out PSNR")
    m = sub.add_parser("measure")
    m.add_argument("name")
    m.add_argument("--sampler", default=SAMPLER)
    m.add_argument("--nfe", type=int, default=32)
    e = sub.add_parser("export")
    e.add_argument("name")
    e.add_argument("out")
    sub.add_parser("floor")
    sub.add_parser("report")
    args = parser.parse_args()
    if args.smoke:
        smoke()
    elif args.cmd == "run":
        run(args.name, args.minutes, _changes(args.set), args.clock, args.ae, args.every)
    elif args.cmd == "autoencoder":
        autoencoder(args.name, _changes(args.set), args.clock, args.holdout)
    elif args.cmd == "measure":
        measure(args.name, args.sampler, args.nfe)
    elif args.cmd == "export":
        export(args.name, args.out)
    elif args.cmd == "floor":
        floor()
    elif args.cmd == "report":
        report()
    else:
        parser.error("give a command (run, autoencoder, measure, export, floor, report) or --smoke")


if __name__ == "__main__":
    main()
