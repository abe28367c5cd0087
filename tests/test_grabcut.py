"""unmix.data.grabcut: the classical coarse mask product models are conditioned on, and the product preset's sizes."""
import sys

import pytest
import torch
import torch.nn.functional as F

from unmix.apps.product import feather
from unmix.data.grabcut import grabcut_mask, grabcut_refine, with_grabcut
from unmix.errors import UnmixError
from unmix.training.config import TrainConfig, fill_defaults, network_config


def _disc_photo(size=32, radius=9.0):
    """A red disc on a grey-blue background with per-pixel noise: [3, S, S] in [-1, 1] and the disc's mask."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    disc = ((yy - size / 2) ** 2 + (xx - size / 2 - 2) ** 2 <= radius ** 2).float()[None]
    bg = torch.tensor([-0.4, -0.2, 0.5]).reshape(3, 1, 1) + 0.05 * torch.randn(3, size, size, generator=g)
    fg = torch.tensor([0.9, -0.8, -0.7]).reshape(3, 1, 1) + 0.05 * torch.randn(3, size, size, generator=g)
    return (disc * fg + (1 - disc) * bg).clamp(-1, 1), disc


def test_grabcut_finds_a_clear_object_with_no_user_input_and_is_deterministic():
    photo, disc = _disc_photo()
    m = grabcut_mask(photo)
    assert m.shape == (1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    iou = (m * disc).sum() / ((m + disc) > 0).sum()
    assert iou > 0.9
    assert torch.equal(m, grabcut_mask(photo))


def test_a_user_box_outside_the_object_finds_nothing_of_it_and_one_colour_finds_nothing():
    photo, disc = _disc_photo()
    m = grabcut_mask(photo, box=(0, 0, 6, 6))  # a corner of background only
    assert (m * disc).sum() == 0
    assert grabcut_mask(torch.zeros(3, 16, 16)).sum() == 0


def test_the_condition_is_the_photo_and_its_mask_in_minus_one_to_one():
    photo, _ = _disc_photo()
    c = with_grabcut(torch.stack([photo, photo.flip(-1)]))
    assert c.shape == (2, 4, 32, 32) and torch.equal(c[:, :3], torch.stack([photo, photo.flip(-1)]))
    assert torch.equal(c[0, 3:], grabcut_mask(photo) * 2 - 1) and torch.equal(c[1, 3:], grabcut_mask(photo.flip(-1)) * 2 - 1)


def _iou(a, b):
    return float((a * b).sum() / ((a + b) > 0).sum())


def test_refine_snaps_a_blurred_shifted_seed_onto_the_object_and_keeps_the_sure_seeds():
    photo, disc = _disc_photo()
    seed = F.avg_pool2d(disc.roll(2, -1)[None], 7, 1, 3)[0]  # the disc moved 2 px and blurred: soft and off
    m = grabcut_refine(photo, seed)
    assert m.shape == (1, 32, 32) and set(m.unique().tolist()) <= {0.0, 1.0}
    assert _iou((seed > 0.5).float(), disc) < 0.85 < 0.95 < _iou(m, disc)
    assert torch.equal(m, grabcut_refine(photo, seed))
    sure = seed.clone()
    sure[:, :4, :4] = 1.0  # a background corner the seed is sure of stays product; a sure hole stays out
    sure[:, 14:18, 16:20] = 0.0
    m = grabcut_refine(photo, sure)
    assert bool((m[:, :4, :4] == 1).all()) and bool((m[:, 14:18, 16:20] == 0).all())


def test_refine_of_a_seed_with_no_product_is_an_empty_mask():
    photo, _ = _disc_photo()
    assert grabcut_refine(photo, torch.zeros(1, 32, 32)).sum() == 0
    assert grabcut_refine(photo, torch.full((1, 32, 32), 0.3)).sum() == 0


def test_feather_gives_a_hard_edge_one_soft_pixel_each_side_in_closed_form():
    m = torch.zeros(1, 8, 8)
    m[:, :, :4] = 1  # a vertical edge between columns 3 and 4
    a = feather(m)
    assert torch.equal(a[:, :, :3], torch.ones(1, 8, 3)) and torch.equal(a[:, :, 5:], torch.zeros(1, 8, 3))
    assert torch.allclose(a[:, :, 3], torch.full((1, 8), (2 / 3 - 0.2) / 0.6))  # 3x3 average 2/3, stretched
    assert torch.allclose(a[:, :, 4], torch.full((1, 8), (1 / 3 - 0.2) / 0.6))
    assert torch.equal(feather(torch.ones(1, 5, 5)), torch.ones(1, 5, 5))  # the frame's edge is not an edge
    assert torch.equal(feather(m) > 0.5, m > 0.5)


def test_without_opencv_it_is_one_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(UnmixError, match="need OpenCV"):
        grabcut_mask(torch.zeros(3, 8, 8))


@pytest.mark.parametrize("size, patch", [(32, 2), (64, 4)])
def test_the_product_preset_folds_every_size_to_a_16_pixel_grid_and_trains_at_higher_noise(size, patch):
    cfg = fill_defaults(TrainConfig(data="product", size=size), "product", True, False)
    assert (cfg.p_mean, cfg.p_std) == (0.5, 1.0)
    assert network_config(cfg, "product", (4, size, size), 0, 1.0)["patch_size"] == patch
    mine = TrainConfig(data="product", size=size, p_mean=-1.0, net={"patch_size": 1})
    assert fill_defaults(mine, "product", True, False).p_mean == -1.0
    assert network_config(mine, "product", (4, size, size), 0, 1.0)["patch_size"] == 1
