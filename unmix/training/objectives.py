"""What one training step optimises, as an object the trainer calls without knowing the model kind.

    draws = objective.draw(batch, generator, item_shape)   # every random draw of one GLOBAL batch
    loss  = objective.loss(net, x0, cond, draws_slice)      # per-sample loss [b] of this rank's slice

Drawing the whole global batch from one seeded generator first, and only then slicing it across ranks and
accumulation rounds, is what makes a run independent of how its work is divided, and resumable bit for bit.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from unmix.denoiser import unwrap
from unmix.losses import Recipe
from unmix.nets.layout import RetrievalLayout


class DiffusionObjective:
    """The denoising loss of a Recipe, with label dropout ("no label" = class num_classes) for guidance. A net that
    keeps the training set's ideal denoiser (unmix.nets.neighbours) gets its table from `data` (`prepare`)."""

    def __init__(self, recipe: Recipe, num_classes: int = 0, label_dropout: float = 0.0, data=None):
        self.recipe, self.num_classes, self.label_dropout, self.data = recipe, num_classes, label_dropout, data
        self.leave_out = None  # a neighbours net's share of rows left out of their own guess (set by `prepare`)

    def draw(self, batch: int, generator: torch.Generator, item_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        sigma = self.recipe.sample_sigma(batch, generator)
        noise = torch.randn((batch, *item_shape), generator=generator)
        drop = torch.rand(batch, generator=generator) < self.label_dropout
        draws = {"sigma": sigma, "noise": noise, "drop": drop}
        if self.leave_out is not None:
            draws["leave_out"] = torch.rand(batch, generator=generator) < self.leave_out
        return draws

    def loss(self, net: nn.Module, x0: torch.Tensor, cond, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.num_classes:
            cond = torch.where(draws["drop"].to(x0.device), self.num_classes, cond)
        else:
            cond = None
        exclude = None
        if "leave_out" in draws:  # NaN rows exclude nothing
            exclude = torch.where(draws["leave_out"].to(x0.device).view(-1, *[1] * (x0.ndim - 1)), x0, float("nan"))
        return self.recipe.loss(self.recipe.denoiser(net), x0, draws["sigma"].to(x0.device),
                                draws["noise"].to(x0.device), cond, exclude)

    def bucket(self, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        """Where each sample's noise level falls in the training distribution, in [0, 1] (loss by quartile)."""
        return self.recipe.quantile(draws["sigma"])

    def checkpoint_config(self) -> dict:
        return {"recipe": self.recipe.to_dict()}

    def prepare(self, *nets: nn.Module) -> None:
        """Store every item of `data` in each net's neighbours table (deterministic: a resumed run refills what its
        checkpoint holds, a fine-tuned one takes its new data), and draw from now on which rows leave their own
        item out of the guess (the net's `neighbours_leave_out`)."""
        owners = [m for m in map(unwrap, nets) if getattr(m, "neighbours", None) is not None]
        if not owners or self.data is None:
            return
        self.leave_out = owners[0].config.neighbours_leave_out or None  # at 0 nothing is drawn or excluded
        values = _every_item(self.data)
        for m in owners:
            m.neighbours.fill(values)


LAYOUT_ROWS = 16  # items per batch row that the layout MLP of a text net is regressed on


class TextDiffusionObjective(DiffusionObjective):
    """The denoising loss with caption conditioning: per item one caption variant (`CaptionBank.pick_with`), replaced
    by the null caption with probability `caption_dropout` (for classifier-free guidance), looked up in a CaptionBank of
    precomputed embeddings, so training never runs the text encoder.

    A retrieval layout (unmix.nets.layout) gets its table from `data` (`prepare`). For a net with a layout MLP
    and `layout_rows` = K > 0, each batch row also draws K more items of `data` with their captions, and the
    MLP's guess from each caption is regressed onto the item (mean squared error per pixel, averaged over the K
    rows, added to that row's loss). This is the MLP's only training signal (the U-Net takes its guess
    detached). The MLP is cheap, so it sees K times the captions the U-Net does; the rows are drawn with the
    batch, so runs resume bit for bit."""

    def __init__(self, recipe: Recipe, bank, caption_dropout: float = 0.1, data=None, layout_rows: int = 0):
        super().__init__(recipe)
        self.bank, self.caption_dropout = bank, caption_dropout
        self.data, self.layout_rows = data, layout_rows if data is not None else 0

    def draw(self, batch: int, generator: torch.Generator, item_shape: tuple[int, ...]) -> dict[str, torch.Tensor]:
        draws = super().draw(batch, generator, item_shape)
        draws["variant"] = torch.rand(batch, generator=generator, dtype=torch.float64)
        draws["drop_caption"] = torch.rand(batch, generator=generator, dtype=torch.float64) < self.caption_dropout
        if self.layout_rows:
            k = (batch, self.layout_rows)
            draws["layout_items"] = torch.randint(0, len(self.data), k, generator=generator)
            draws["layout_variant"] = torch.rand(k, generator=generator, dtype=torch.float64)
            draws["layout_drop"] = torch.rand(k, generator=generator, dtype=torch.float64) < self.caption_dropout
        return draws

    def loss(self, net: nn.Module, x0: torch.Tensor, cond, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        ids = self.bank.pick_with(draws["items"], draws["variant"], draws["drop_caption"])
        text = self.bank.lookup(ids).to(x0.device)
        loss = self.recipe.loss(self.recipe.denoiser(net), x0, draws["sigma"].to(x0.device),
                                draws["noise"].to(x0.device), text)
        layout = getattr(unwrap(net), "layout", None)
        if not self.layout_rows or layout is None:
            return loss
        items = draws["layout_items"].reshape(-1)
        ids = self.bank.pick_with(items, draws["layout_variant"], draws["layout_drop"])
        target, _ = self.data.batch(items.cpu())  # the dataset as given (on the CPU), not the trainer's device copy
        guess = layout(self.bank.pooled[ids.to(self.bank.pooled.device)].float())
        target = _resized(target, guess.shape[-1])
        rows = (guess.float() - target.to(guess.device)).square().flatten(1).mean(1)
        return loss + rows.view(len(loss), -1).mean(1).to(loss.dtype)

    def prepare(self, *nets: nn.Module) -> None:
        """Give each net's retrieval layout (unmix.nets.layout) its table from `data`: one key per caption
        variant of each item, pointing at that item's picture, and the null caption pointing at the data's mean
        picture (so guidance contrasts a prompt's guess with the mean's). Deterministic, so a resumed run refills
        exactly what its checkpoint holds, and a fine-tuned one takes its new data's pictures."""
        layouts = [m for m in map(unwrap, nets) if isinstance(getattr(m, "layout", None), RetrievalLayout)]
        if not layouts or self.data is None:
            return
        ids = [(j, i) for i, v in enumerate(self.bank.variants) for j in v]
        strings = torch.as_tensor([0] + [j for j, _ in ids], dtype=torch.long)
        owner = torch.as_tensor([len(self.data)] + [i for _, i in ids], dtype=torch.long)
        size = layouts[0].layout.size
        values = _every_item(self.data, size)
        values = torch.cat([values, values.mean(0, keepdim=True)])
        for m in layouts:
            m.layout.fill(self.bank.pooled[strings.to(self.bank.pooled.device)].cpu(), owner, values)


def _every_item(data, size: int | None = None) -> torch.Tensor:
    """Every picture of `data` as float32 on the CPU (area-resized to `size` when given), read 1,024 at a time so a
    large folder never builds one huge batch."""
    parts = (data.batch(part)[0] for part in torch.arange(len(data)).split(1024))
    return torch.cat([x.float().cpu() if size is None else _resized(x, size) for x in parts])


def _resized(x: torch.Tensor, size: int) -> torch.Tensor:
    """Pictures [N, C, H, W] as float32 on the CPU at size x size (area-averaged when smaller)."""
    x = x.float().cpu()
    return x if x.shape[2:] == (size, size) else F.interpolate(x, size=(size, size), mode="area")


class ImageCondObjective(DiffusionObjective):
    """The denoising loss of an image-conditioned net (SR3 / Palette): `cond` is the batch's conditioning image
    [b, C, H, W], replaced by "no condition" (an all-NaN row, see unmix.nets.unet) with probability
    `cond_dropout`, so one net also learns the unconditional denoiser that classifier-free guidance needs."""

    def __init__(self, recipe: Recipe, cond_dropout: float = 0.1):
        super().__init__(recipe, label_dropout=cond_dropout)
        self.cond_dropout = cond_dropout

    def loss(self, net: nn.Module, x0: torch.Tensor, cond, draws: dict[str, torch.Tensor]) -> torch.Tensor:
        drop = draws["drop"].to(x0.device)[:, None, None, None]
        cond = torch.where(drop, torch.full_like(cond, float("nan")), cond)
        return self.recipe.loss(self.recipe.denoiser(net), x0, draws["sigma"].to(x0.device),
                                draws["noise"].to(x0.device), cond)

    def preview(self, net: nn.Module, dataset) -> torch.Tensor:
        """The training preview: the dataset's own picture of what the net makes of its conditions."""
        return dataset.preview(self.recipe.denoiser(net), device=next(net.parameters()).device)


def split(draws: dict[str, torch.Tensor], sl: slice, device) -> dict[str, torch.Tensor]:
    """The rows `sl` of every draw, on `device`."""
    return {k: v[sl].to(device) for k, v in draws.items()}
