"""The local neighbours' guess (unmix.nets.neighbours, patch_scale > 0): each pixel a softmax-weighted mean of the
training items' values there, weighted by how well the P x P patch around it matches; its patch sides per noise
level; its reach over each row's nearest candidates; the leave-out; and the denoiser's base
(D = c_skip x + (1 - c_skip) guess + c_out F)."""
import math

import torch

from unmix.denoiser import NetworkDenoiser
from unmix.nets import UNet, UNetConfig
from unmix.nets.neighbours import NeighbourGuess

TINY = dict(in_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), head_channels=8)


def _table(m=6, shape=(2, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, *shape, generator=g).half().float()  # exactly representable in the float16 table


def _local_by_hand(x, sigma, items, side, skip=None):
    """Per row and pixel, in float64 loops: weights exp(-|patch(x) - patch(x_i)|^2 / 2 sigma^2) over the P x P
    window inside the picture, the mean of the items' values at that pixel."""
    x, items = x.double(), items.double()
    n, c, h, w = x.shape
    out = torch.zeros_like(x)
    r = side // 2
    for b in range(n):
        keep = [i for i in range(len(items)) if skip is None or skip[b] != i]
        for i in range(h):
            for j in range(w):
                win = (slice(None), slice(max(0, i - r), i + r + 1), slice(max(0, j - r), j + r + 1))
                d = torch.stack([(x[b][win] - items[k][win]).square().sum() for k in keep])
                wts = torch.softmax(-d / (2 * float(sigma[b]) ** 2), 0)
                out[b, :, i, j] = sum(wt * items[k][:, i, j] for wt, k in zip(wts, keep))
    return out


def test_the_local_guess_is_the_patchwise_posterior_mean_by_hand():
    items = _table()
    g = NeighbourGuess(2, patch_scale=3.0, candidates=len(items))
    g.fill(items)
    x = items[:3] + 0.7 * torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(1))
    sigma = torch.tensor([0.4, 1.0, 1.7])  # patch sides 3, 3, 5
    assert g.patch_sides(sigma, 8).tolist() == [3, 3, 5]
    for row in range(3):
        side = int(g.patch_sides(sigma[row:row + 1], 8))
        want = _local_by_hand(x[row:row + 1], sigma[row:row + 1], items, side)
        assert torch.allclose(g(x[row:row + 1], sigma[row:row + 1]).double(), want, atol=1e-5)


def test_patches_that_reach_the_side_are_the_whole_picture_guess_and_min_patch_holds():
    items = _table()
    local, whole = NeighbourGuess(2, patch_scale=3.0), NeighbourGuess(2)
    local.fill(items), whole.fill(items)
    x, sigma = torch.randn(4, 2, 8, 8, generator=torch.Generator().manual_seed(2)), torch.full((4,), 5.0)
    assert local.patch_sides(sigma, 8).eq(0).all()  # 3 * 5 = 15 >= 8
    assert torch.allclose(local(x, sigma), whole(x, sigma), atol=1e-6)
    assert NeighbourGuess(2, 3.0, min_patch=5).patch_sides(torch.tensor([0.01, 2.0]), 32).tolist() == [5, 7]


def test_the_left_out_item_takes_no_part_and_only_the_nearest_candidates_do():
    items = _table(m=8)
    g = NeighbourGuess(2, patch_scale=2.0, candidates=len(items))
    g.fill(items)
    x, sigma = items[2:4] + 0.05, torch.tensor([0.5, 0.5])
    left_out = g(x, sigma, exclude=items[2:4])
    want = torch.cat([_local_by_hand(x[r:r + 1], sigma[r:r + 1], items, 3, skip=[2 + r]) for r in range(2)])
    assert torch.allclose(left_out.double(), want, atol=1e-5)
    assert not torch.allclose(left_out, g(x, sigma), atol=1e-2)  # with itself in, the guess snaps back to it
    few = NeighbourGuess(2, patch_scale=2.0, candidates=2)
    few.fill(items)
    d = (x.flatten(1)[:, None] - items.flatten(1)[None]).square().sum(-1)
    nearest = d.topk(2, dim=1, largest=False).indices
    for r in range(2):
        want = _local_by_hand(x[r:r + 1], sigma[r:r + 1], items[nearest[r]], 3)
        assert torch.allclose(few(x[r:r + 1], sigma[r:r + 1]).double(), want, atol=1e-5)


def test_a_fresh_local_net_denoises_with_its_guess_and_training_moves_it():
    cfg = UNetConfig(**TINY, neighbours=True, neighbours_patch=3.0)
    net = UNet(cfg)
    items = _table(shape=(2, 8, 8))
    net.neighbours.fill(items)
    den = NetworkDenoiser(net, sigma_data=0.5)
    x, sigma = torch.randn(3, 2, 8, 8, generator=torch.Generator().manual_seed(3)), torch.tensor([0.3, 1.0, 4.0])
    with torch.no_grad():
        c_skip = (0.25 / (sigma ** 2 + 0.25)).view(-1, 1, 1, 1)  # EDM's, sigma_data 0.5; the output conv starts at 0
        want = c_skip * x + (1 - c_skip) * net.neighbours(x, sigma)
        assert torch.allclose(den(x, sigma), want, atol=1e-6)
        torch.nn.init.normal_(net.conv_out.weight, std=0.1)
        moved = den(x, sigma) - net.neighbours(x, sigma)
    assert moved.abs().max() > 1e-3 and math.isfinite(float(moved.abs().max()))
