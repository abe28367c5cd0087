"""Image-conditioned diffusion (SR3 / Palette): the condition concatenated to the U-Net's input channels."""
import math

import pytest
import torch

from unmix.apps import product
from unmix.errors import UnmixError
from unmix.guidance import ClassifierFreeGuidance, steer
from unmix.losses import Recipe
from unmix.nets import build_net, net_config
from unmix.nets.unet import UNet, UNetConfig
from unmix.samplers import sample
from unmix.training.objectives import ImageCondObjective

TINY = dict(channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), groups=8)


def _perturbed(net):
    """A net whose zero-initialised output convolutions are randomised, so its output depends on its inputs."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            if not p.abs().sum():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def test_default_config_is_the_unconditional_net_and_old_configs_load():
    plain = UNet(UNetConfig(**TINY))
    assert plain.conv_in.weight.shape[1] == 3
    cfg = net_config(plain)
    assert cfg["cond_channels"] == 0
    old = {k: v for k, v in cfg.items() if k != "cond_channels"}  # a checkpoint written before this field existed
    rebuilt = build_net(old)
    rebuilt.load_state_dict(plain.state_dict(), strict=True)  # raises on a missing or unexpected key
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), plain.state_dict().values()))
    cond = UNet(UNetConfig(cond_channels=3, **TINY))
    assert cond.conv_in.weight.shape[1] == 3 + 3 + 1  # input, condition, "present" plane
    assert set(cond.state_dict()) == set(plain.state_dict())


def test_none_equals_nan_rows_and_differs_from_any_real_image():
    net = _perturbed(UNet(UNetConfig(cond_channels=3, **TINY))).eval()
    g = torch.Generator().manual_seed(1)
    x, c = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([0.3, -0.2])
    img = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    with torch.no_grad():
        none = net(x, c, None)
        nan = net(x, c, torch.full((2, 3, 8, 8), math.nan))
        zeros = net(x, c, torch.zeros(2, 3, 8, 8))
        mixed = net(x, c, torch.stack([img[0], torch.full((3, 8, 8), math.nan)]))
        real = net(x, c, img)
        one_row = net(x, c, img[:1])
    torch.testing.assert_close(none, nan)
    assert not torch.allclose(none, zeros, atol=1e-4)  # a grey image is a condition, not "no condition"
    torch.testing.assert_close(mixed[0], real[0])
    torch.testing.assert_close(mixed[1], none[1])
    torch.testing.assert_close(one_row[0], real[0])  # one condition row serves the whole batch
    assert torch.isfinite(none).all()


@pytest.mark.parametrize("cond", [torch.zeros(2, 3), torch.zeros(2, 3, 4, 4), torch.zeros(3, 3, 8, 8),
                                  torch.zeros(2, 3, 8, 8, dtype=torch.long), "busy.png"])
def test_bad_conditions_are_one_clear_error(cond):
    net = UNet(UNetConfig(cond_channels=3, **TINY))
    with pytest.raises(UnmixError, match="image-conditional"):
        net(torch.zeros(2, 3, 8, 8), torch.zeros(2), cond)


def test_image_cond_excludes_labels_and_text():
    with pytest.raises(UnmixError):
        UNetConfig(cond_channels=3, num_classes=10)
    with pytest.raises(UnmixError):
        UNetConfig(cond_channels=-1)


def test_objective_drops_conditions_to_nan_rows():
    seen = {}

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x, c_noise, cond):
            seen["cond"] = cond
            return x * self.w

    obj = ImageCondObjective(Recipe.from_name("edm"), cond_dropout=0.5)
    draws = obj.draw(64, torch.Generator().manual_seed(0), (3, 4, 4))
    cond = torch.rand(64, 3, 4, 4)
    obj.loss(Spy(), torch.zeros(64, 3, 4, 4), cond, draws)
    dropped = torch.isnan(seen["cond"]).flatten(1).all(1)
    assert torch.equal(dropped, draws["drop"]) and 10 < int(dropped.sum()) < 54
    assert torch.equal(seen["cond"][~dropped], cond[~dropped])


def _pairs():
    """Two (condition, target) pairs at 8x8: distinct smooth targets, and conditions that are the targets seen
    through noise plus a different flat background (a miniature 'busy photo -> clean product' job)."""
    g = torch.Generator().manual_seed(3)
    low = torch.rand(2, 3, 2, 2, generator=g) * 2 - 1
    target = torch.nn.functional.interpolate(low, size=(8, 8), mode="bilinear", align_corners=False)
    cond = (target.flip(0) * 0.5 + 0.3 * torch.randn(2, 3, 8, 8, generator=g)).clamp(-1, 1)
    return cond, target


@pytest.fixture(scope="module")
def trained():
    """A tiny image-conditioned net trained (plain loop, the trainer's objective) on two pairs, as a denoiser."""
    torch.manual_seed(0)
    cond, target = _pairs()
    net = UNet(UNetConfig(cond_channels=3, **TINY))
    obj = ImageCondObjective(Recipe.from_name("edm"), cond_dropout=0.1)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(250):
        idx = torch.randint(0, 2, (16,), generator=g)
        draws = obj.draw(16, g, (3, 8, 8))
        loss = obj.loss(net, target[idx], cond[idx], draws).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return obj.recipe.denoiser(net.eval()), cond, target


@pytest.mark.parametrize("sampler", ["heun", "dpmpp_2m"])
def test_tiny_image_conditioned_net_overfits_two_pairs_and_each_condition_gives_its_target(trained, sampler):
    denoiser, cond, target = trained
    with torch.no_grad():
        for i in range(2):
            x = sample(denoiser, (4, 3, 8, 8), sampler, 17, seed=i, cond=cond[i:i + 1])
            err_own = (x - target[i]).pow(2).mean()
            err_other = (x - target[1 - i]).pow(2).mean()
            assert err_own < 0.03 and err_other > 5 * err_own, (i, float(err_own), float(err_other))


def test_guidance_on_the_image_condition(trained):
    """D_w = D(none) + w (D(c) - D(none)) with none an all-NaN row; w = 1 is plain conditional; a guided sampler
    still lands on the condition's own target."""
    denoiser, cond, target = trained
    g = torch.Generator().manual_seed(5)
    x, sigma = torch.randn(2, 3, 8, 8, generator=g), torch.tensor([0.8, 2.0])
    with torch.no_grad():
        d_c, d_u = denoiser(x, sigma, cond), denoiser(x, sigma, None)
        torch.testing.assert_close(ClassifierFreeGuidance(denoiser, 2.5)(x, sigma, cond), d_u + 2.5 * (d_c - d_u))
        torch.testing.assert_close(steer(denoiser, cond)(x, sigma, cond), d_c)
        y = sample(ClassifierFreeGuidance(denoiser, 1.5), (4, 3, 8, 8), "heun", 17, seed=0, cond=cond[1:])
    assert (y - target[1]).pow(2).mean() < 0.05


# --- the product job as a library call (unmix.apps.product) ----------------------------------------------------------

def test_letterbox_round_trip_and_replicated_padding():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(3, 8, 8, generator=g) * 2 - 1
    x, box = product.letterbox(img, 8)
    assert torch.equal(x, img) and box == (0, 0, 8, 8)
    assert torch.equal(product.unletterbox(x, box, (8, 8)), img)
    wide = torch.rand(3, 4, 8, generator=g) * 2 - 1
    x, box = product.letterbox(wide, 8)
    assert box == (2, 0, 4, 8) and torch.equal(x[:, 2:6], wide)
    assert torch.equal(x[:, 0], wide[:, 0]) and torch.equal(x[:, 7], wide[:, -1])  # edge rows repeated


def _ideal_product_denoiser(x, sigma, cond=None):
    """A closed-form product model (x = [alpha, photo]) for photos whose product is the red pixels: given the photo
    it knows the alpha exactly (and the photo); with no condition it returns "nothing here" on grey."""
    if cond is None or bool(torch.isnan(cond).all()):
        return torch.cat([-torch.ones_like(x[:, :1]), torch.zeros_like(x[:, 1:])], 1)
    red = ((cond[:, :1] > 0.5) & (cond[:, 1:2] < -0.5)).to(x.dtype) * 2 - 1
    return torch.cat([red, cond[:, :3]], 1).expand_as(x)  # cond = [photo, its GrabCut mask]


def _red_product_photo(h: int, w: int, top: int, left: int, ph: int, pw: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    photo = torch.rand(3, h, w, generator=g) * 0.8 - 0.6  # a busy background with no red pixel (red <= 0.2)
    photo[:, top:top + ph, left:left + pw] = torch.tensor([0.9, -0.8, -0.7])[:, None, None]
    photo[1, top + 1, left + 1] = -0.6  # the product is not flat: its own pixels must survive exactly
    return photo


@pytest.mark.parametrize("method", ["mean", "sample"])
@pytest.mark.parametrize("refine", [False, True])
def test_clean_with_the_ideal_alpha_keeps_the_product_pixels_and_whitens_the_rest(method, refine):
    """The closed form: with the exact alpha, clean is the photo inside the product and white outside, whether the
    alpha is the posterior mean (one call, of the photo and its mirror image: the product is off centre) or a
    sample; refined, the same less a one-pixel soft edge on each side of the product's border."""
    photo = _red_product_photo(16, 16, 4, 3, 6, 9)
    calls = []
    out = product.clean(_ideal_product_denoiser, photo, 16, method=method, refine=refine, nfe=3,
                        callback=lambda *a: calls.append(a))
    assert len(calls) == (1 if method == "mean" else 3)
    inside = torch.zeros(16, 16, dtype=torch.bool)
    inside[4:10, 3:12] = True
    core, beyond = inside.clone(), ~inside
    if refine:
        core, beyond = torch.zeros_like(inside), torch.ones_like(inside)
        core[5:9, 4:11], beyond[3:11, 2:13] = True, False
        band = ~core & ~beyond
        assert bool(((out[:, band] - photo[:, band]).abs().amax(0) > 0).all())  # blended with white there
    assert torch.equal(out[:, core], photo[:, core])
    assert bool((out[:, beyond] == 1).all())


def test_scene_keeps_the_product_pixels_bit_for_bit_at_any_size():
    photo = _red_product_photo(21, 34, 5, 9, 10, 14, seed=2)
    out = product.scene(_ideal_product_denoiser, photo, 16, nfe=4, clean_nfe=3)
    inside = torch.zeros(21, 34, dtype=torch.bool)  # the product less 2 px: its mask, seen at 16 px, is soft there
    inside[7:13, 11:21] = True
    assert out.shape == photo.shape
    assert torch.equal(out[:, inside], photo[:, inside])
    outside = torch.ones(21, 34, dtype=torch.bool)
    outside[3:17, 7:25] = False
    assert (out[:, outside] - photo[:, outside]).abs().mean() > 0.1  # the background is a new one
    with pytest.raises(UnmixError, match="prompt"):
        product.scene(_ideal_product_denoiser, photo, 16, prompt="on a beach")


def test_square_photo_outpaints_a_product_cut_by_the_frame_and_keeps_its_pixels():
    photo = _red_product_photo(10, 16, 1, 0, 6, 8, seed=3)  # the product touches the left edge
    out = product.square_photo(_ideal_product_denoiser, photo, 16, margin=0.25, nfe=4, clean_nfe=3, refine=False)
    assert out.shape == (3, 12, 12)  # the 6x8 product (the ideal outpainting adds none) + 2 * 2 of white
    assert torch.equal(out[:, 3:9, 2:10], photo[:, 1:7, 0:8])
    whole = _red_product_photo(10, 16, 1, 4, 6, 8, seed=3)  # not cut: centred on white, no outpainting
    assert torch.equal(product.square_photo(_ideal_product_denoiser, whole, 16, margin=0.25, clean_nfe=3,
                                            refine=False), out)


def test_an_unknown_method_is_one_clear_error():
    with pytest.raises(UnmixError, match="unknown method 'median'"):
        product.clean(_ideal_product_denoiser, _red_product_photo(16, 16, 4, 3, 6, 9), 16, method="median")


def test_clean_of_a_photo_with_no_product_is_one_clear_error():
    photo = _red_product_photo(16, 16, 0, 0, 0, 0)
    with pytest.raises(UnmixError, match="no product found"):
        product.clean(_ideal_product_denoiser, photo, 16, nfe=3)


def test_square_centres_the_product_on_white_with_its_pixels_unchanged():
    img = torch.ones(3, 20, 30)
    img[:, 3:9, 5:17] = torch.tensor([0.8, -0.9, -0.9])[:, None, None]  # a red 6x12 product
    img[0, 4, 6] = -0.5
    assert product.product_box(img) == (3, 5, 6, 12)
    sq = product.square(img, margin=0.25)
    assert sq.shape == (3, 18, 18)  # 12 + 2 * 3
    assert torch.equal(sq[:, 6:12, 3:15], img[:, 3:9, 5:17])
    assert bool((sq[:, :6] == 1).all()) and bool((sq[:, 12:] == 1).all())


@pytest.mark.parametrize("bad", [torch.ones(3, 8, 8), torch.zeros(1, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8),
                                 "photo.png", torch.full((3, 8, 8), math.nan)])
def test_bad_photos_are_one_clear_error(bad):
    with pytest.raises(UnmixError):
        product.square(bad)  # all white: no product found; the others: not an RGB float image
