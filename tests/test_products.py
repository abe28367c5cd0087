"""Product-photo triples: shapes, exact compositing identities, determinism, held-out splits, .pat reading."""
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from unmix.data import products as P
from unmix.data.grabcut import grabcut_mask
from unmix.errors import UnmixError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def solid_folder(tmp_path_factory):
    """A backgrounds folder holding one image of a single colour, so the background of every triple is known."""
    d = tmp_path_factory.mktemp("bg")
    Image.new("RGB", (40, 30), (51, 102, 204)).save(d / "solid.png")
    return d


def test_shapes_and_ranges():
    t = P.ProductTriples(32, "clutter", seed=1).triples(range(6))
    assert t.busy.shape == t.white.shape == (6, 3, 32, 32) and t.mask.shape == (6, 1, 32, 32)
    for x in (t.busy, t.white):
        assert x.min() >= -1 and x.max() <= 1
    assert t.mask.min() >= 0 and t.mask.max() <= 1
    # the product covers 45-80% of the frame on its longest side and lies inside it (levels plain / clutter)
    side = t.box[:, 2:].max(1).values.float() / 32
    assert bool(((side >= 0.40) & (side <= 0.85)).all())
    assert bool((t.box[:, :2] >= 0).all()) and bool((t.box[:, :2] + t.box[:, 2:] <= 32).all())
    assert bool(((t.mask > 0.5).flatten(1).float().mean(1) > 0.05).all())


def test_composite_identities_on_a_known_background(solid_folder):
    """busy = c (1 - a) + p and white = (1 - a) + p, with c the known background colour: so
    white - busy = (1 - c)(1 - a) exactly, white is pure white where a = 0, and busy = white where a = 1."""
    d = P.ProductTriples(32, "plain", backgrounds=f"folder:{solid_folder}", seed=3)
    t = d.triples(range(8))
    busy, white, a = (t.busy + 1) / 2, (t.white + 1) / 2, t.mask
    c = torch.tensor([51, 102, 204]).float().reshape(1, 3, 1, 1) / 255
    torch.testing.assert_close(white - busy, (1 - c) * (1 - a), atol=2e-6, rtol=0)
    outside, inside = (a == 0).expand_as(busy), (a == 1).expand_as(busy)
    assert bool((white[outside] == 1).all()) and torch.allclose(busy[outside], c.expand_as(busy)[outside], atol=1e-6)
    assert inside.any() and torch.equal(busy[inside], white[inside])


def test_mask_is_where_the_busy_photo_differs_from_its_background(solid_folder):
    d = P.ProductTriples(32, "plain", backgrounds=f"folder:{solid_folder}", seed=4)
    t = d.triples(range(4))
    bg = torch.tensor([51, 102, 204]).float().reshape(1, 3, 1, 1) / 127.5 - 1
    differs = ((t.busy - bg).abs().amax(1, keepdim=True) > 1e-3)
    covered = t.mask > 1e-3
    assert torch.equal(differs & ~covered, torch.zeros_like(differs))  # nothing changes outside the product
    iou = (differs & covered).sum() / (differs | covered).sum()
    assert iou > 0.95  # only product pixels that happen to match the background colour are missed


def test_determinism_and_order_independence():
    a = P.ProductTriples(32, "clutter", seed=7).triples([3, 5, 9])
    b = P.ProductTriples(32, "clutter", seed=7).triples([9, 3])
    assert torch.equal(a.busy[0], b.busy[1]) and torch.equal(a.busy[2], b.busy[0])
    assert torch.equal(a.mask[2], b.mask[0]) and torch.equal(a.white[0], b.white[1])
    c = P.ProductTriples(32, "clutter", seed=8).triples([3])
    assert not torch.equal(a.busy[0], c.busy[0])


def test_dataset_interface_gives_white_target_and_busy_condition():
    d = P.ProductTriples(32, "plain", seed=2, length=100)
    x0, cond = d.batch(torch.tensor([1, 2]))
    t = d.triples([1, 2])
    assert len(d) == 100 and d.shape == d.cond_shape == (3, 32, 32) and d.is_image and d.num_classes == 0 and d.captions is None
    assert torch.equal(x0, t.white) and torch.equal(cond, t.busy)
    assert d.describe()["name"] == "product-plain-train"


def test_held_out_products_and_backgrounds_never_in_training_draws():
    train, test = set(P.split_products("train")), set(P.split_products("test"))
    assert train and test and not train & test and len(train | test) == len(P.product_codepoints())
    names = {n for n, _ in P.offline_backgrounds("train")}
    assert not names & {n for n, _ in P.offline_backgrounds("test")}
    assert "skimage:coffee" not in names
    drawn = P.ProductTriples(32, "clutter", seed=0).triples(range(40)).product
    assert set(drawn.tolist()) <= train


def test_cut_level_lets_the_frame_cut_the_product():
    t = P.ProductTriples(32, "cut", seed=0).triples(range(40))
    outside = (t.box[:, :2] < 0) | (t.box[:, :2] + t.box[:, 2:] > 32)
    assert bool(outside.any(1).any())


def test_gimp_pattern_reader(tmp_path):
    px = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 13
    name = b"Test\x00"
    header = struct.pack(">5I", 24 + len(name), 1, 3, 2, 3) + b"GPAT" + name
    (tmp_path / "t.pat").write_bytes(header + px.tobytes())
    img = P.read_gimp_pattern(tmp_path / "t.pat")
    assert torch.equal((img * 255).round().byte(), torch.from_numpy(px).permute(2, 0, 1))
    (tmp_path / "bad.pat").write_bytes(b"\x00" * 30)
    with pytest.raises(UnmixError):
        P.read_gimp_pattern(tmp_path / "bad.pat")


def test_procedural_backgrounds_are_in_range_and_seeded():
    for kind in ("noise", "stripes", "checker"):
        a = P.procedural(kind, 16, torch.Generator().manual_seed(0))
        b = P.procedural(kind, 16, torch.Generator().manual_seed(0))
        assert a.shape == (3, 16, 16) and a.min() >= 0 and a.max() <= 1 and torch.equal(a, b) and a.std() > 0.01


@pytest.mark.parametrize("kwargs", [{"size": 4}, {"level": "messy"}, {"split": "val"}, {"backgrounds": "mine"}])
def test_bad_arguments_raise_one_clear_error(kwargs):
    with pytest.raises(UnmixError):
        P.ProductTriples(**kwargs)


def test_empty_backgrounds_folder_is_an_error(tmp_path):
    with pytest.raises(UnmixError, match="no images"):
        P.ProductTriples(32, backgrounds=f"folder:{tmp_path}")


def test_product_metrics_match_references():
    """PSNR in closed form, SSIM against scikit-image's implementation with the same settings, IoU by hand."""
    from unmix.metrics.product import composite_on_white, mask_iou, psnr, ssim

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 16, 16, generator=g) * 2 - 1
    y = (x + 0.2 * torch.randn(3, 3, 16, 16, generator=g)).clamp(-1, 1)
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(psnr(x, y), 10 * torch.log10(4 / mse))
    metrics = pytest.importorskip("skimage.metrics")
    ref = [metrics.structural_similarity(x[i].numpy(), y[i].numpy(), channel_axis=0, gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=2) for i in range(3)]
    torch.testing.assert_close(ssim(x, y), torch.tensor(ref, dtype=torch.float64), atol=1e-5, rtol=0)
    a = torch.zeros(2, 1, 4, 4)
    b = torch.zeros(2, 1, 4, 4)
    a[0, :, :2], b[0, :, 1:3] = 1, 1  # 4 shared pixels of 12
    torch.testing.assert_close(mask_iou(a, b), torch.tensor([4 / 12, 1.0], dtype=torch.float64))
    alpha = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)
    torch.testing.assert_close(composite_on_white(x[:2], alpha)[0], torch.ones(3, 16, 16))
    torch.testing.assert_close(composite_on_white(x[:2], alpha)[1], x[1])


def test_the_trainers_product_dataset_is_alpha_and_photo_given_the_photo_and_its_grabcut_mask():
    """`unmix train --data product`: x0 = [alpha in [-1, 1], busy photo], cond = [busy photo, GrabCut mask], from
    the same triples as ProductTriples (same seed, same items); only 32 and 64 px recipes."""
    from unmix.data import load_dataset

    ds = load_dataset("product", 32)
    assert ds.name == "product" and ds.shape == (4, 32, 32) and ds.cond_shape == (4, 32, 32)
    x0, cond = ds.batch(torch.tensor([5, 2]))
    t = P.ProductTriples(32, "clutter", "train").triples([5, 2])
    assert torch.equal(x0[:, 1:], t.busy) and torch.equal(cond[:, :3], t.busy)
    assert torch.equal(cond[:, 3:], torch.stack([grabcut_mask(b) for b in t.busy]) * 2 - 1)
    assert torch.equal(x0[:, :1], t.mask * 2 - 1)
    assert ds.describe()["task"] == "product"
    with pytest.raises(UnmixError, match="32 or 64"):
        load_dataset("product", 48)


def test_backgrounds_dataset_is_the_triples_own_backgrounds_unconditional_and_seeded(solid_folder):
    from unmix.data import load_dataset
    from unmix.data.backgrounds import Backgrounds

    d = load_dataset("backgrounds", 16)
    x, cond = d.batch(torch.tensor([3, 0, 3]))
    assert x.shape == (3, 3, 16, 16) and cond is None and d.cond_shape is None and d.shape == (3, 16, 16)
    assert x.min() >= -1 and x.max() <= 1 and torch.equal(x[0], x[2]) and not torch.equal(x[0], x[1])
    # at the triples' size, item i's background is the plain triple i's (on scenes) busy photo outside its product
    t = P.ProductTriples(32, "plain", seed=5, backgrounds="scenes").triples([7])
    bg = Backgrounds(32, seed=5).batch(torch.tensor([7]))[0]
    outside = (t.mask == 0).expand(-1, 3, -1, -1)
    assert torch.allclose(bg[outside], t.busy[outside], atol=1e-6)
    assert not {n for n, _ in P.scene_photos("train")} & {n for n, _ in P.scene_photos("test")}
    # a user's folder: every background is its one colour
    solid = Backgrounds(16, backgrounds=f"folder:{solid_folder}").batch(torch.arange(4))[0]
    assert torch.allclose(solid, torch.tensor([51, 102, 204]).view(1, 3, 1, 1) / 127.5 - 1, atol=1e-5)
