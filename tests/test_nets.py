import pytest
import torch

from unmix.errors import UnmixError
from unmix.nets import MLP, MLPConfig, UNet, UNetConfig, build_net, net_config


def _perturb(net):
    """Fresh nets output exactly zero (zero-initialised last layers); give them some signal."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize(
    "cfg, shape",
    [
        (dict(in_channels=1, channels=8, channel_mult=(1, 2, 2), attn_levels=(1, 2)), (3, 1, 8, 8)),
        (dict(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_levels=()), (2, 3, 16, 16)),
        (dict(in_channels=4, out_channels=2, channels=8, channel_mult=(1, 1, 2), attn_levels=(0,)), (2, 4, 8, 12)),
        (dict(in_channels=3, channels=12, channel_mult=(1, 2, 2, 2), dropout=0.1, head_channels=8), (1, 3, 16, 24)),
        (dict(in_channels=3, channels=16, channel_mult=(1, 2), patch_size=2, attn_levels=(0, 1)), (2, 3, 8, 12)),
    ],
)
def test_unet_shapes_any_channels_and_non_square(cfg, shape):
    net = UNet(UNetConfig(**cfg))
    out = net(torch.randn(shape), torch.randn(shape[0]), None)
    assert out.shape == (shape[0], cfg.get("out_channels") or cfg["in_channels"], *shape[2:])


def test_fresh_unet_outputs_zero_and_depends_on_noise_level():
    net = UNet(UNetConfig(in_channels=1, channels=8))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(net(x, torch.zeros(2)), torch.zeros(2, 1, 8, 8))
    _perturb(net)
    assert not torch.allclose(net(x, torch.zeros(2)), net(x, torch.ones(2)))


def test_unet_rejects_sizes_not_divisible_by_levels():
    net = UNet(UNetConfig(in_channels=1, channels=8, channel_mult=(1, 2, 2)))
    with pytest.raises(UnmixError, match="divisible by 4"):
        net(torch.randn(1, 1, 6, 8), torch.zeros(1))
    with pytest.raises(UnmixError, match="attention levels"):
        UNetConfig(channel_mult=(1, 2), attn_levels=(3,))
    patched = UNet(UNetConfig(in_channels=1, channels=8, channel_mult=(1, 2, 2), patch_size=2))
    with pytest.raises(UnmixError, match="divisible by 8"):  # 2 (patch) * 4 (two downsamplings)
        patched(torch.randn(1, 1, 12, 8), torch.zeros(1))
    with pytest.raises(UnmixError, match="patch_size"):
        UNetConfig(patch_size=0)


def test_class_conditioning_with_reserved_no_label_index():
    net = _perturb(UNet(UNetConfig(in_channels=1, channels=8, num_classes=10)))
    x, c = torch.randn(2, 1, 8, 8), torch.zeros(2)
    a, b = net(x, c, torch.tensor([1, 1])), net(x, c, torch.tensor([2, 2]))
    assert not torch.allclose(a, b)
    assert torch.equal(net(x, c, None), net(x, c, torch.tensor([10, 10])))  # None = "no label"


def test_mlp_and_rebuild_from_config():
    mlp = _perturb(MLP(MLPConfig(dim=2, hidden=32, depth=2, num_classes=3)))
    x, c = torch.randn(5, 2), torch.randn(5)
    assert mlp(x, c, torch.tensor([0, 1, 2, 3, 0])).shape == (5, 2)
    for net, args in [(mlp, (x, c)), (_perturb(UNet(UNetConfig(in_channels=2, channels=8))), (torch.randn(1, 2, 8, 8), c[:1]))]:
        cfg = net_config(net)
        twin = build_net(cfg)
        twin.load_state_dict(net.state_dict())
        assert torch.equal(twin(*args), net(*args))
        assert cfg == net_config(twin)


def test_build_net_rejects_unknown_kind_and_settings():
    with pytest.raises(UnmixError, match="unknown network kind"):
        build_net({"kind": "transformer"})
    with pytest.raises(UnmixError, match="unknown unet settings"):
        build_net({"kind": "unet", "widht": 3})
