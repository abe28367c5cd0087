"""A DDPM-style U-Net (Ho et al. 2020; Nichol & Dhariwal 2021), rebuilt from a dataclass config.

Residual blocks with GroupNorm take the noise/class embedding as a per-channel scale and shift;
self-attention runs at the chosen levels (level 0 is full size, level i is size / 2^i); the last
conv of every residual branch starts at zero so a fresh net is close to the identity map. With
patch_size p the image is first folded into p*p times the channels at 1/p the size (and unfolded at
the end), which moves the cost from the pixel level to the layout levels on a CPU budget.

With text_dim > 0 the net is text-conditional, as in Stable Diffusion (Rombach et al. 2022) and Imagen
(Saharia et al. 2022): cond is a TextCond (unmix.conditioning); after each self-attention at the
cross-attention levels (and in the middle) the features attend to the prompt's token embeddings, and the
pooled vector is projected and added to the noise embedding. With text_dim = 0 (the default, and every
checkpoint written before text existed) the net is exactly the label/unconditional U-Net it always was.

With cond_channels = C > 0 the net is image-conditional, as SR3 (Saharia et al. 2021) and Palette (Saharia et al.
2022): cond is an image [N (or 1), C, H, W] at the input's size, concatenated to the network input channels
together with one "present" plane (1 where the row has a condition). A row that is all NaN is "no condition"
(what condition dropout trains on and what classifier-free guidance contrasts with); it enters the
net as zeros with present = 0, so no real image, not even a grey one, can be mistaken for it. The condition is
not scaled by the denoiser's c_in: the preconditioning applies to the noisy input only.

With layout_size = S > 0 (text nets only) the prompt's pooled vector becomes a first guess of the picture (an
MLP's, or a softmax-weighted mean of stored training pictures), [in_channels, S, S] resized to the input,
concatenated to the input channels (unmix.nets.layout).

With neighbours = True the net also takes the training set's ideal denoiser D*(x, sigma) (unmix.nets.neighbours),
computed from the raw noisy input by the denoiser wrapper and concatenated the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unmix.conditioning import Cond, TextCond
from unmix.errors import UnmixError
from unmix.nets.embedding import ConditionEmbedding
from unmix.nets.layout import KINDS, RetrievalLayout, TextLayout
from unmix.nets.neighbours import NeighbourGuess


@dataclass
class UNetConfig:
    in_channels: int = 3
    out_channels: int | None = None  # None: same as in_channels
    channels: int = 64  # width at level 0
    channel_mult: tuple[int, ...] = (1, 2, 2)  # one entry per level; len - 1 downsamplings
    num_res_blocks: int = 2
    attn_levels: tuple[int, ...] = (1,)
    head_channels: int = 32
    dropout: float = 0.0
    num_classes: int = 0
    noise_scale: float = 1.0  # c_noise multiplier before the sinusoidal features
    groups: int = 32  # GroupNorm groups (reduced to divide the width)
    patch_size: int = 1  # > 1: fold p x p pixel patches into channels first (Hoogeboom et al. 2023), level 0 = size / p
    text_dim: int = 0  # > 0: text-conditional on a TextCond of this embedding width (384 for all-MiniLM-L6-v2)
    cross_attn_levels: tuple[int, ...] | None = None  # levels whose blocks attend to the text; None: attn_levels
    cond_channels: int = 0  # > 0: image-conditional on a [N, cond_channels, H, W] image (SR3/Palette concatenation)
    layout_size: int = 0  # > 0 (text nets): the pooled prompt -> a guess of the picture at this side, as input
    layout: str = "mlp"  # how the guess is made: "mlp" (learnt) or "retrieval" (from the training set, stored)
    layout_hidden: int = 1024  # the layout MLP's hidden width
    layout_temperature: float = 0.03  # retrieval: softmax temperature over cosine similarities
    neighbours: bool = False  # the training set's ideal denoiser as extra input channels (unmix.nets.neighbours)
    neighbours_leave_out: float = 0.0  # share of training rows whose own item is left out of that guess
    neighbours_patch: float = 0.0  # > 0: a local guess, patches of this x sigma pixels (unmix.nets.neighbours)
    neighbours_min_patch: int = 3  # the local guess's smallest patch side (odd)
    neighbours_candidates: int = 64  # a local guess combines each row's this many nearest training items

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attn_levels = tuple(int(a) for a in self.attn_levels)
        if self.cross_attn_levels is not None:
            self.cross_attn_levels = tuple(int(a) for a in self.cross_attn_levels)
        if self.channels < 1 or not self.channel_mult or min(self.channel_mult) < 1:
            raise UnmixError("U-Net needs channels >= 1 and a non-empty channel_mult of positive ints")
        if self.patch_size < 1:
            raise UnmixError(f"U-Net needs patch_size >= 1, got {self.patch_size}")
        if self.num_res_blocks < 1:
            raise UnmixError(f"U-Net needs num_res_blocks >= 1, got {self.num_res_blocks}")
        bad = [a for a in self.attn_levels if not 0 <= a < len(self.channel_mult)]
        if bad:
            raise UnmixError(f"attention levels {bad} out of range 0..{len(self.channel_mult) - 1}")
        if self.text_dim < 0:
            raise UnmixError(f"U-Net needs text_dim >= 0 (0 = no text), got {self.text_dim}")
        if self.text_dim and self.num_classes:
            raise UnmixError("a U-Net is conditioned on labels (num_classes) or on text (text_dim), not both")
        if self.cond_channels < 0:
            raise UnmixError(f"U-Net needs cond_channels >= 0 (0 = no image condition), got {self.cond_channels}")
        if self.cond_channels and (self.text_dim or self.num_classes):
            raise UnmixError("a U-Net is conditioned on an image (cond_channels) or on labels / text, not both")
        if self.layout_size < 0 or self.layout_hidden < 1:
            raise UnmixError(f"U-Net needs layout_size >= 0 and layout_hidden >= 1, got {self.layout_size}, "
                             f"{self.layout_hidden}")
        if self.layout not in KINDS or not self.layout_temperature > 0:
            raise UnmixError(f"U-Net needs layout in {KINDS} and layout_temperature > 0, got {self.layout!r}, "
                             f"{self.layout_temperature}")
        if not 0 <= self.neighbours_leave_out <= 1:
            raise UnmixError(f"neighbours_leave_out must be in [0, 1], got {self.neighbours_leave_out}")
        if not (self.neighbours_patch >= 0 and self.neighbours_candidates >= 1):
            raise UnmixError(f"neighbours_patch must be >= 0 and neighbours_candidates >= 1, got "
                             f"{self.neighbours_patch}, {self.neighbours_candidates}")
        if self.neighbours_leave_out and not self.neighbours:
            raise UnmixError("neighbours_leave_out is for nets with neighbours=True (the training set's guess)")
        if self.neighbours and (self.text_dim or self.cond_channels):
            raise UnmixError("neighbours=True is for unconditional and label nets, not text or image-conditioned ones")
        if self.layout_size and not self.text_dim:
            raise UnmixError("layout_size > 0 needs a text-conditional U-Net (text_dim > 0): the layout is the prompt's")
        bad = [a for a in self.text_levels if not 0 <= a < len(self.channel_mult)]
        if bad:
            raise UnmixError(f"cross-attention levels {bad} out of range 0..{len(self.channel_mult) - 1}")

    @property
    def levels(self) -> int:
        return len(self.channel_mult)

    @property
    def text_levels(self) -> tuple[int, ...]:
        """The levels with cross-attention to the text (none without text)."""
        if not self.text_dim:
            return ()
        return self.attn_levels if self.cross_attn_levels is None else self.cross_attn_levels


def _norm(ch: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, ch), ch)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2, self.drop = _norm(cout, groups), nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = F.silu(self.norm2(h) * (1 + scale) + shift)
        return self.skip(x) + self.conv2(self.drop(h))


class Attention(nn.Module):
    def __init__(self, ch: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm, self.qkv = _norm(ch, groups), nn.Conv2d(ch, 3 * ch, 1)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q, k, v)  # [n, heads, hw, c/heads]
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class CrossAttention(nn.Module):
    """Image features attend to text tokens (Rombach et al. 2022, eq. 3): queries from the normalised features,
    keys and values from the layer-normalised token embeddings; padded tokens (mask False) get no weight."""

    def __init__(self, ch: int, text_dim: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, ch // head_channels)
        self.norm, self.q = _norm(ch, groups), nn.Conv2d(ch, ch, 1)
        self.text_norm, self.kv = nn.LayerNorm(text_dim), nn.Linear(text_dim, 2 * ch)
        self.proj = _zero(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, text: TextCond) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.q(self.norm(x)).reshape(n, self.heads, c // self.heads, h * w).transpose(-1, -2)
        kv = self.kv(self.text_norm(text.tokens)).reshape(n, -1, 2, self.heads, c // self.heads)
        k, v = kv.permute(2, 0, 3, 1, 4)  # each [n, heads, T, c/heads]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=text.mask[:, None, None, :])  # [n, heads, hw, c/heads]
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


class Level(nn.Module):
    """The residual blocks (each optionally followed by attention, then cross-attention to text) at one resolution."""

    def __init__(self, cins: list[int], cout: int, emb_dim: int, cfg: UNetConfig, attn: bool, text: bool = False):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, cout, emb_dim, cfg.dropout, cfg.groups) for c in cins)
        self.attns = nn.ModuleList(
            Attention(cout, cfg.head_channels, cfg.groups) if attn else nn.Identity() for _ in cins
        )
        # empty without text: no parameters, so older checkpoints' state dicts are unchanged
        self.xattns = nn.ModuleList(
            CrossAttention(cout, cfg.text_dim, cfg.head_channels, cfg.groups) for _ in cins if text
        )

    def step(self, j: int, h: torch.Tensor, emb: torch.Tensor, text: TextCond | None) -> torch.Tensor:
        h = self.attns[j](self.blocks[j](h, emb))
        return self.xattns[j](h, text) if self.xattns else h


class UNet(nn.Module):
    """net(x_in [N,C,H,W], c_noise [N], cond) -> [N, out_channels, H, W]; H, W divisible by
    patch_size * 2^(levels-1). cond: labels [N] or None (label / unconditional nets), a TextCond of N rows
    or one row for all (text nets)."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        self.config = cfg = config
        chs = [cfg.channels * m for m in cfg.channel_mult]
        emb_dim = 4 * cfg.channels
        self.embed = ConditionEmbedding(cfg.channels, emb_dim, cfg.num_classes, cfg.noise_scale, cfg.text_dim)
        p2 = cfg.patch_size ** 2
        image_in = cfg.cond_channels + 1 if cfg.cond_channels else 0  # the condition and its "present" plane
        self.layout = None
        if cfg.layout_size and cfg.layout == "mlp":
            self.layout = TextLayout(cfg.text_dim, cfg.in_channels, cfg.layout_size, cfg.layout_hidden)
        elif cfg.layout_size:
            self.layout = RetrievalLayout(cfg.text_dim, cfg.in_channels, cfg.layout_size, cfg.layout_temperature)
        image_in += cfg.in_channels if cfg.layout_size else 0
        self.neighbours = NeighbourGuess(cfg.in_channels, cfg.neighbours_patch, cfg.neighbours_candidates,
                                         cfg.neighbours_min_patch) if cfg.neighbours else None
        image_in += cfg.in_channels if cfg.neighbours else 0
        self.conv_in = nn.Conv2d((cfg.in_channels + image_in) * p2, chs[0], 3, padding=1)
        skips = [chs[0]]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        cur = chs[0]
        for i, ch in enumerate(chs):
            self.down.append(Level([cur] + [ch] * (cfg.num_res_blocks - 1), ch, emb_dim, cfg, i in cfg.attn_levels,
                                   i in cfg.text_levels))
            cur = ch
            skips += [ch] * cfg.num_res_blocks
            if i < cfg.levels - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.mid1 = ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.groups)
        self.mid_attn = Attention(cur, cfg.head_channels, cfg.groups)
        self.mid_xattn = CrossAttention(cur, cfg.text_dim, cfg.head_channels, cfg.groups) if cfg.text_dim else None
        self.mid2 = ResBlock(cur, cur, emb_dim, cfg.dropout, cfg.groups)
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, ch in reversed(list(enumerate(chs))):
            cins = []
            for _ in range(cfg.num_res_blocks + 1):
                cins.append(cur + skips.pop())
                cur = ch
            self.up.append(Level(cins, ch, emb_dim, cfg, i in cfg.attn_levels, i in cfg.text_levels))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
        self.norm_out = _norm(cur, cfg.groups)
        self.conv_out = _zero(nn.Conv2d(cur, (cfg.out_channels or cfg.in_channels) * p2, 3, padding=1))

    def _text(self, cond, n: int, dtype: torch.dtype, device: torch.device) -> TextCond | None:
        """cond checked against the net's kind: a TextCond of n rows for a text net, else not a TextCond."""
        d = self.config.text_dim
        if not d:
            if isinstance(cond, TextCond):
                raise UnmixError("this U-Net was trained without text (text_dim=0); it takes labels or None, "
                                 "not a TextCond")
            return None
        if not isinstance(cond, TextCond):
            raise UnmixError(f"this U-Net is text-conditional: cond must be a TextCond (encoded prompts), got "
                             f"{type(cond).__name__}; for no condition encode the null caption \"\"")
        if cond.dim != d or len(cond) not in (1, n):
            raise UnmixError(f"text conditioning for this U-Net needs {n} (or 1) rows of width {d}, got "
                             f"{len(cond)} rows of width {cond.dim}")
        return cond.expand(n).to(device, dtype)

    def _image(self, x: torch.Tensor, cond) -> torch.Tensor:
        """x with the image condition and its "present" plane concatenated (cond None or NaN rows: no condition)."""
        n, _, h, w = x.shape
        c = self.config.cond_channels
        if cond is None:
            cond = torch.full((1, c, h, w), math.nan, device=x.device)
        if not isinstance(cond, torch.Tensor) or not cond.is_floating_point() or cond.ndim != 4 \
                or tuple(cond.shape[1:]) != (c, h, w) or cond.shape[0] not in (1, n):
            got = list(cond.shape) if isinstance(cond, torch.Tensor) else type(cond).__name__
            raise UnmixError(f"this U-Net is image-conditional: cond must be a float image [{n} (or 1), {c}, {h}, {w}] "
                             f"in [-1, 1] (all-NaN rows for no condition), got {got}")
        cond = cond.to(x.device, x.dtype).expand(n, -1, -1, -1)
        present = ~torch.isnan(cond).flatten(1).all(1)
        plane = present.to(x.dtype)[:, None, None, None].expand(n, 1, h, w)
        return torch.cat([x, torch.where(present[:, None, None, None], cond.nan_to_num(0.0), 0.0), plane], dim=1)

    def extra_inputs(self, x: torch.Tensor, sigma: torch.Tensor, exclude: torch.Tensor | None = None) -> dict:
        """The denoiser's hook (unmix.denoiser.Denoiser.network): a neighbours net's guess D*(x, sigma) from the raw
        noisy input, before preconditioning; nothing for other nets. A local guess is also the denoiser's base: the net
        learns its correction (and a fresh net samples the guess itself)."""
        if self.neighbours is None:
            return {}
        guess = self.neighbours(x, sigma, exclude)
        return {"guess": guess, "base": guess} if self.config.neighbours_patch else {"guess": guess}

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Cond = None,
                guess: torch.Tensor | None = None) -> torch.Tensor:
        """`guess`: the neighbours' guess D*(x, sigma) of a neighbours net (unmix.denoiser.Denoiser passes it)."""
        p = self.config.patch_size
        k = p * 2 ** (self.config.levels - 1)
        if x.ndim != 4 or x.shape[1] != self.config.in_channels or x.shape[2] % k or x.shape[3] % k:
            raise UnmixError(
                f"U-Net input must be [N, {self.config.in_channels}, H, W] with H and W divisible by {k}, "
                f"got {list(x.shape)}"
            )
        if self.config.cond_channels:
            x, cond = self._image(x, cond), None
        text = self._text(cond, x.shape[0], self.conv_in.weight.dtype, x.device)
        if self.layout is not None:
            # detached: the guess is a regression or a retrieval of its own, not bent by the denoising loss
            x = torch.cat([x, self.layout(text.pooled, x.shape[2:]).detach().to(x.dtype)], dim=1)
        if self.neighbours is not None:
            if guess is None or guess.shape[0] != x.shape[0] or guess.shape[2:] != x.shape[2:]:
                raise UnmixError("this U-Net takes the training set's guess of the clean input (guess=, [N, C, H, W] "
                                 "like x); call it through unmix.denoiser.Denoiser, which computes it")
            x = torch.cat([x, guess.to(x.dtype)], dim=1)
        emb = self.embed(c_noise, text if text is not None else cond)
        h = self.conv_in(F.pixel_unshuffle(x, p) if p > 1 else x)
        skips = [h]
        for i, level in enumerate(self.down):
            for j in range(len(level.blocks)):
                h = level.step(j, h, emb, text)
                skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid_attn(self.mid1(h, emb))
        h = self.mid2(self.mid_xattn(h, text) if self.mid_xattn is not None else h, emb)
        for i, level in enumerate(self.up):
            for j in range(len(level.blocks)):
                h = level.step(j, torch.cat([h, skips.pop()], dim=1), emb, text)
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        return F.pixel_shuffle(out, p) if p > 1 else out
