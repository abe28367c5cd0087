"""Latent diffusion through the encoder seam (unmix.encoders): the mask at latent resolution, inpainting that keeps
the known pixels exactly, image-to-image through the latents, and pairing an autoencoder with data and a latent
network."""
import pytest
import torch

from unmix.encoders import AutoencoderEncoder, check_autoencoder, edit, inpaint
from unmix.errors import UnmixError
from unmix.nets import build_net

AE = dict(kind="autoencoder", channels=8, channel_mult=[1, 2, 2], latent_channels=4, groups=4, image_size=16)


@pytest.fixture
def ae():
    torch.manual_seed(0)
    return build_net(AE).eval()


def gaussian_denoiser(x, sigma, cond=None):
    """The exact posterior mean for latents distributed N(0, I): E[z | z + sigma eps] = z / (1 + sigma^2)."""
    return x / (1 + sigma.reshape(-1, *([1] * (x.ndim - 1))) ** 2)


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_a_latent_is_filled_in_when_any_pixel_of_its_block_is():
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[0:5, 0:5] = True  # rows/cols 0..4: blocks 0 and 1 (pixel 4 starts block 1)
    mask[15, 15] = True
    small = AutoencoderEncoder(build_net(AE)).latent_mask(mask, (3, 16, 16))
    expect = torch.zeros(4, 4, dtype=torch.bool)
    expect[0:2, 0:2] = True
    expect[3, 3] = True
    assert small.shape == (4, 4, 4)
    assert torch.equal(small[0], expect) and torch.equal(small[3], expect)


def test_latent_inpainting_returns_the_known_pixels_exactly(ae):
    x = image()
    mask = torch.zeros(1, 16, 16, dtype=torch.bool)
    mask[:, 4:12, 2:10] = True
    out, nfe = inpaint(AutoencoderEncoder(ae), gaussian_denoiser, x, mask, n=3, method="replace", nfe=8,
                              generator=torch.Generator().manual_seed(0), return_nfe=True)
    full = mask.expand(3, 16, 16)
    assert out.shape == (3, 3, 16, 16) and nfe == 8
    assert torch.equal(out[:, ~full], x.expand(3, 3, 16, 16)[:, ~full])
    assert (out[:, full] - x[full]).abs().mean() > 0.05  # the hole is generated, not copied
    again = inpaint(AutoencoderEncoder(ae), gaussian_denoiser, x, mask, n=3, method="replace", nfe=8,
                           generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_latent_inpainting_rejects_a_mask_that_leaves_no_latent_known(ae):
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[::4, ::4] = True  # one pixel in every 4x4 block
    with pytest.raises(UnmixError, match="no latent is known"):
        inpaint(AutoencoderEncoder(ae), gaussian_denoiser, image(), mask, n=1, nfe=4)


def test_latent_edit_keeps_the_image_at_strength_0_and_samples_at_strength_1(ae):
    x = image()
    assert torch.equal(edit(AutoencoderEncoder(ae), gaussian_denoiser, x, 0.0, n=2), x.expand(2, 3, 16, 16))
    a = edit(AutoencoderEncoder(ae), gaussian_denoiser, x, 1.0, n=2, nfe=6, generator=torch.Generator().manual_seed(0))
    b = edit(AutoencoderEncoder(ae), gaussian_denoiser, -x, 1.0, n=2, nfe=6, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 3, 16, 16)
    assert torch.equal(a, b)  # strength 1 ignores the input: plain generation
    half = edit(AutoencoderEncoder(ae), gaussian_denoiser, x, 0.5, n=2, nfe=6, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(half, a)
    with pytest.raises(UnmixError, match="strength"):
        edit(AutoencoderEncoder(ae), gaussian_denoiser, x, 1.5)


@pytest.mark.parametrize("shape, in_channels, message", [
    ((1, 16, 16), None, r"trained on 3x16x16 images, the data is 1x16x16"),
    ((3, 32, 32), None, r"trained on 3x16x16 images, the data is 3x32x32"),
    ((3, 16, 16), 3, r"latent network takes 3 channels, the autoencoder gives 4"),
])
def test_a_mismatched_autoencoder_is_one_clear_error(ae, shape, in_channels, message):
    for given in (ae, ae.config, AE):
        with pytest.raises(UnmixError, match=message) as e:
            check_autoencoder(given, shape, in_channels)
        assert "\n" not in str(e.value)
    check_autoencoder(ae, (3, 16, 16), 4)
