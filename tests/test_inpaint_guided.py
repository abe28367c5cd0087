"""Reconstruction guidance (method="guided") against the exact conditional of a Gaussian mixture."""
import math

import pytest
import torch
from torch import nn

from unmix.analytic import GaussianMixture
from unmix.denoiser import NetworkDenoiser
from unmix.errors import UnmixError
from unmix.inpaint import SIGMA_DATA, Reconstruction, exact_conditional, inpaint
from unmix.metrics.exact import sliced_w2
from unmix.nets.mlp import MLP, MLPConfig
from unmix.samplers import list_samplers

MASK = torch.tensor([[[False, False], [True, True]]])  # keep the top row of a 1x2x2 image, fill the bottom


def four_clusters(std=0.2):
    """Four clusters in 4-D whose bottom row is decided by the top row, but only jointly."""
    means = 0.7 * torch.tensor([[1.0, 1, 1, 1], [-1, -1, -1, -1], [1, -1, 1, -1], [-1, 1, -1, 1]])
    return GaussianMixture(torch.full((4,), 0.25), means, torch.full((4, 4), std**2), event_shape=(1, 2, 2))


def bottom_row(x):
    return x.reshape(x.shape[0], 4)[:, 2:]


@pytest.mark.parametrize("sampler", ["euler", "ddpm"])
def test_guided_is_measurably_closer_than_replacement_at_equal_nfe(sampler):
    gm = four_clusters()
    n = 800
    errs = {"replace": [], "guided": []}
    floors = []
    for i in range(4):  # typical observations: draws from the mixture itself
        y = gm.sample(1, torch.Generator().manual_seed(10 + i))[0]
        ref = exact_conditional(gm, y, MASK)
        truth = ref.sample(n, torch.Generator().manual_seed(1))
        floors.append(sliced_w2(truth, ref.sample(n, torch.Generator().manual_seed(2))))
        r, used_r = inpaint(gm, y, MASK, n, method="replace", sampler=sampler, nfe=40, seed=i, return_nfe=True)
        g, used_g = inpaint(gm, y, MASK, n, method="guided", sampler=sampler, nfe=20, weight=1.0, seed=i,
                            return_nfe=True)
        assert used_g == used_r == 40  # 20 guided calls, each a forward and a backward pass
        errs["replace"].append(sliced_w2(bottom_row(r), truth))
        errs["guided"].append(sliced_w2(bottom_row(g), truth))
    mean = {k: sum(v) / len(v) for k, v in errs.items()}
    floor = sum(floors) / len(floors)
    assert mean["guided"] < 0.4 * mean["replace"]
    assert max(errs["guided"]) < min(errs["replace"])  # on every observation, not just on average
    assert mean["guided"] < 10 * floor


def test_weight_zero_is_replacement_at_twice_the_cost():
    """With no guidance the wrapper is plain replacement: same draws, same result, a backward pass per call more."""
    gm = four_clusters()
    y = gm.sample(1, torch.Generator().manual_seed(3))[0]
    r, used_r = inpaint(gm, y, MASK, 50, method="replace", sampler="ddpm", nfe=12, seed=5, return_nfe=True)
    g, used_g = inpaint(gm, y, MASK, 50, method="guided", sampler="ddpm", nfe=12, weight=0.0, seed=5, return_nfe=True)
    assert torch.allclose(g, r, atol=1e-12)
    assert used_g == 2 * used_r == 24


def test_guided_repaint_is_closer_than_repaint_at_about_equal_nfe():
    gm = four_clusters()
    n = 800
    errs = {"repaint": [], "guided_repaint": []}
    for i in range(4):
        y = gm.sample(1, torch.Generator().manual_seed(10 + i))[0]
        truth = exact_conditional(gm, y, MASK).sample(n, torch.Generator().manual_seed(1))
        r, used_r = inpaint(gm, y, MASK, n, method="repaint", sampler="euler", nfe=40, jump=5, repeats=4, seed=i,
                            return_nfe=True)
        g, used_g = inpaint(gm, y, MASK, n, method="guided_repaint", sampler="euler", nfe=20, jump=5, repeats=4,
                            weight=1.0, seed=i, return_nfe=True)
        assert used_g <= used_r  # 154 vs 173
        errs["repaint"].append(sliced_w2(bottom_row(r), truth))
        errs["guided_repaint"].append(sliced_w2(bottom_row(g), truth))
    assert sum(errs["guided_repaint"]) < 0.7 * sum(errs["repaint"])


def test_guided_repaint_with_weight_zero_is_repaint_at_twice_the_cost():
    gm = four_clusters()
    y = gm.sample(1, torch.Generator().manual_seed(3))[0]
    kw = dict(sampler="euler_ancestral", nfe=10, jump=3, repeats=3, seed=5, return_nfe=True)
    r, used_r = inpaint(gm, y, MASK, 50, method="repaint", **kw)
    g, used_g = inpaint(gm, y, MASK, 50, method="guided_repaint", weight=0.0, **kw)
    assert torch.allclose(g, r, atol=1e-12)
    assert used_g == 2 * used_r


@pytest.mark.parametrize("sampler", list_samplers())
@pytest.mark.parametrize("method", ["guided", "guided_repaint"])
def test_known_pixels_come_out_exactly(sampler, method):
    y = torch.tensor([[[0.7, -0.7], [0.0, 0.0]]])
    x = inpaint(four_clusters(), y, MASK, 5, method=method, sampler=sampler, nfe=6, jump=2, repeats=2, weight=2.0,
                seed=0)
    assert x.shape == (5, 1, 2, 2)
    assert torch.equal(x[:, :, 0], y[:, 0].expand(5, 2).reshape(5, 1, 2))
    assert torch.isfinite(x).all()


def test_correction_matches_the_formula_for_a_linear_denoiser():
    """D(x) = A x has the gradient 2 A^T m (A x - y): the wrapper must apply exactly the documented scale."""
    torch.manual_seed(0)
    a = torch.randn(4, 4, dtype=torch.float64) / 2
    den = lambda x, sigma, cond=None: (x.reshape(-1, 4) @ a.T).reshape(x.shape)  # noqa: E731
    y = torch.tensor([[[0.3, -0.5], [0.0, 0.0]]], dtype=torch.float64).expand(3, 1, 2, 2)
    x = torch.randn(3, 1, 2, 2, dtype=torch.float64)
    sigma, w = torch.tensor([0.3, 1.0, 4.0], dtype=torch.float64), 1.7
    out = Reconstruction(den, y, MASK, w)(x, sigma)
    known = (~MASK).reshape(4).double()
    resid = known * (x.reshape(3, 4) @ a.T - y.reshape(3, 4))
    grad = 2 * resid @ a
    scale = w * (sigma**2 + SIGMA_DATA**2) / (2 * SIGMA_DATA**2)
    expected = x.reshape(3, 4) @ a.T - scale[:, None] * grad
    assert torch.allclose(bottom_row(out), expected[:, 2:])
    assert torch.equal(out.reshape(3, 4)[:, :2], y.reshape(3, 4)[:, :2])


class FlatMLP(nn.Module):
    """The MLP over flattened 1x2x2 images."""

    def __init__(self):
        super().__init__()
        self.mlp = MLP(MLPConfig(dim=4, hidden=16, depth=1))

    def forward(self, x, c_noise, cond=None):
        return self.mlp(x.reshape(len(x), 4), c_noise, cond).reshape(x.shape)


def test_works_through_a_network_under_no_grad_and_leaves_no_gradients():
    torch.manual_seed(0)
    den = NetworkDenoiser(FlatMLP())
    y = torch.tensor([[[0.7, -0.7], [0.0, 0.0]]])
    _, plain = inpaint(den, y, MASK, 4, method="replace", sampler="heun", nfe=7, seed=0, return_nfe=True)
    with torch.no_grad():
        x, used = inpaint(den, y, MASK, 4, method="guided", sampler="heun", nfe=7, weight=1.0, seed=0,
                          return_nfe=True)
    assert not x.requires_grad and torch.isfinite(x).all()
    assert all(p.grad is None for p in den.parameters())
    assert used == 2 * plain  # the same calls as replacement, each with a backward pass
    assert torch.equal(x[:, :, 0], y[:, 0].expand(4, 2).reshape(4, 1, 2))


@pytest.mark.parametrize("weight", [-0.5, math.nan, math.inf])
def test_bad_weight(weight):
    with pytest.raises(UnmixError, match="guidance weight"):
        inpaint(four_clusters(), torch.zeros(1, 2, 2), MASK, 2, method="guided", weight=weight, nfe=4)


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A tiny random digits checkpoint, an 8x8 picture and a bottom-half mask."""
    import numpy as np
    from PIL import Image

    from unmix.losses import Recipe
    from unmix.model import Model
    from unmix.nets import UNet, UNetConfig

    root = tmp_path_factory.mktemp("guided")
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, channels=8, channel_mult=(1,), num_res_blocks=1, attn_levels=()))
    data = {"name": "digits", "shape": [1, 8, 8], "size": 10, "class_names": []}
    ckpt = Model(net, Recipe.from_name("edm"), data).save(root / "ckpt")
    img = np.zeros((8, 8), np.uint8)
    img[1:7, 3:5] = 255
    Image.fromarray(img).save(root / "digit.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    Image.fromarray(mask).save(root / "mask.png")
    return root, ckpt


def _cli(args, capsys):
    import unmix.cli.commands  # noqa: F401  (registers the commands)
    from unmix.cli.app import run_app

    code = run_app([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_guided_keeps_known_pixels_and_reports_the_cost(cli_files, capsys):
    import numpy as np
    from PIL import Image

    root, ckpt = cli_files
    code, out, err = _cli(["inpaint", ckpt, root / "digit.png", "--mask", root / "mask.png", "--method", "guided",
                           "--weight", 2, "--n", 2, "--nfe", 3, "--out", root / "out", "--save-npy", root / "x.npy"],
                          capsys)
    assert code == 0, err
    x = np.load(root / "x.npy")
    seen = np.asarray(Image.open(root / "digit.png"), np.float32) / 127.5 - 1
    assert np.allclose(x[:, 0, :4], seen[None, :4], atol=1e-6)
    assert "6 NFE (3 denoiser calls, each a forward and a backward pass)" in out


@pytest.mark.parametrize("weight", ["-1", "nan"])
def test_cli_bad_weight_is_one_line_and_exit_2(cli_files, capsys, weight):
    root, ckpt = cli_files
    code, _, err = _cli(["inpaint", ckpt, root / "digit.png", "--mask", root / "mask.png", "--method", "guided",
                         "--weight", weight], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Invalid value for '--weight'" in err, err
