"""The training set's ideal denoiser as a U-Net input (unmix.nets.neighbours): the closed form, leave-one-out in
training, the table filled from the data, carried by checkpoints, resumed and sampled bit for bit."""
import json

import pytest
import torch

from unmix.analytic import FiniteDataset
from unmix.data.dataset import Dataset
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.nets import UNet, UNetConfig
from unmix.nets.neighbours import NeighbourGuess
from unmix.store.checkpoint import open_checkpoint
from unmix.training.config import TrainConfig
from unmix.training.objectives import DiffusionObjective
from unmix.training.trainer import resume, start

TINY = dict(in_channels=2, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), head_channels=8)


def _table(m=5, shape=(2, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, *shape, generator=g).half().float()  # exactly representable in the float16 table


def _by_hand(x, sigma, items, skip=None):
    """sum_i softmax_i(-|x - x_i|^2 / 2 sigma^2) x_i, one row at a time in float64."""
    out = []
    for r in range(len(x)):
        keep = [i for i in range(len(items)) if skip is None or i != skip[r]]
        d2 = torch.stack([((x[r].double() - items[i].double()) ** 2).sum() for i in keep])
        w = torch.softmax(-d2 / (2 * float(sigma[r]) ** 2), 0)
        out.append(sum(wi * items[i].double() for wi, i in zip(w, keep)))
    return torch.stack(out)


def test_the_guess_is_the_posterior_mean_over_the_stored_items():
    items, g = _table(), torch.Generator().manual_seed(1)
    table = NeighbourGuess(2)
    assert torch.equal(table(torch.ones(3, 2, 4, 4), torch.ones(3)), torch.zeros(3, 2, 4, 4))  # empty: zeros
    table.fill(items)
    x, sigma = torch.randn(4, 2, 4, 4, generator=g) * 2, torch.tensor([0.5, 2.0, 4.0, 40.0])
    torch.testing.assert_close(table(x, sigma).double(), _by_hand(x, sigma, items), atol=1e-4, rtol=1e-4)
    # parity with the float64 ideal denoiser of a finite dataset (unmix.analytic, checked there against closed forms)
    torch.testing.assert_close(table(x, sigma).double(), FiniteDataset(items)(x.double(), sigma.double()),
                               atol=1e-4, rtol=1e-4)
    # the two limits: the nearest item at low noise, the plain mean at high noise
    near = items[2] + 0.01 * torch.randn(2, 4, 4, generator=g)
    torch.testing.assert_close(table(near[None], torch.tensor([0.05]))[0], items[2], atol=1e-5, rtol=0)
    torch.testing.assert_close(table(x[:1], torch.tensor([1e4]))[0], items.mean(0), atol=1e-4, rtol=0)


def test_leaving_an_item_out_spreads_its_weight_over_the_others():
    items = _table()
    table = NeighbourGuess(2)
    table.fill(items)
    x, sigma = items[[1, 3]] + 0.1, torch.tensor([0.3, 1.5])
    got = table(x, sigma, exclude=items[[1, 3]])
    torch.testing.assert_close(got.double(), _by_hand(x, sigma, items, skip=[1, 3]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(got, table(x, sigma), atol=1e-2)
    alone = NeighbourGuess(2)
    alone.fill(items[:1])
    assert torch.equal(alone(x[:1], sigma[:1], exclude=items[:1]), torch.zeros(1, 2, 4, 4))


def test_training_hands_the_net_a_leave_one_out_guess_and_sampling_the_full_one():
    """At low noise the guess of a training item is its nearest *other* item in the loss, the item itself when
    denoising."""
    items = _table(3)
    net = UNet(UNetConfig(**TINY, neighbours=True))
    net.neighbours.fill(items)
    seen = []
    net.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["guess"]), with_kwargs=True)
    recipe = Recipe.from_name("edm")
    sigma, noise = torch.full((1,), 0.01), torch.zeros(1, 2, 4, 4)
    recipe.loss(recipe.denoiser(net), items[:1], sigma, noise, exclude=items[:1])
    recipe.denoiser(net)(items[:1], sigma)
    d2 = ((items[1:] - items[0]) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(seen[0][0], items[1 + int(d2.argmin())], atol=1e-4, rtol=0)
    torch.testing.assert_close(seen[1][0], items[0], atol=1e-4, rtol=0)


def test_the_objective_leaves_out_the_configured_share_of_rows():
    data = Dataset("four", _table(4), None, [], {})
    objective = DiffusionObjective(Recipe.from_name("edm"), data=data)
    assert "leave_out" not in objective.draw(8, torch.Generator().manual_seed(0), (2, 4, 4))  # no neighbours net
    shares = {}
    objective.prepare(UNet(UNetConfig(**TINY, neighbours=True)))  # leave-out 0: nothing to draw
    assert "leave_out" not in objective.draw(8, torch.Generator().manual_seed(0), (2, 4, 4))
    for share in (0.5, 1.0):
        net = UNet(UNetConfig(**TINY, neighbours=True, neighbours_leave_out=share))
        objective.prepare(net)
        shares[share] = objective.draw(4000, torch.Generator().manual_seed(0), (2, 4, 4))["leave_out"].float().mean()
    assert shares[1.0] == 1 and abs(shares[0.5] - 0.5) < 0.03
    seen = []
    net.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["guess"]), with_kwargs=True)
    draws = {"sigma": torch.full((2,), 0.01), "noise": torch.zeros(2, 2, 4, 4), "drop": torch.zeros(2, dtype=torch.bool),
             "leave_out": torch.tensor([True, False])}
    objective.loss(net, _table(4)[:2], None, draws)
    assert not torch.allclose(seen[0][0], _table(4)[0], atol=1e-3)  # left out: another item
    torch.testing.assert_close(seen[0][1], _table(4)[1], atol=1e-4, rtol=0)  # kept: itself
    with pytest.raises(UnmixError, match="neighbours_leave_out must be in"):
        UNetConfig(**TINY, neighbours=True, neighbours_leave_out=1.5)


def test_a_neighbours_net_needs_its_guess_and_no_text_or_image_condition():
    net = UNet(UNetConfig(**TINY, neighbours=True))
    assert net.conv_in.in_channels == 4
    with pytest.raises(UnmixError, match="takes the training set's guess"):
        net(torch.zeros(1, 2, 4, 4), torch.zeros(1))
    with pytest.raises(UnmixError, match="neighbours=True is for unconditional and label nets"):
        UNetConfig(**TINY, neighbours=True, text_dim=12)
    with pytest.raises(UnmixError, match="neighbours=True is for unconditional and label nets"):
        UNetConfig(**TINY, neighbours=True, cond_channels=3)
    net.neighbours.fill(_table(2))
    with pytest.raises(UnmixError, match=r"stored training items are \[2, 4, 4\], the input is \[2, 8, 8\]"):
        recipe = Recipe.from_name("edm")
        recipe.denoiser(net)(torch.zeros(1, 2, 8, 8), torch.ones(1))


def test_prepare_stores_every_item_of_the_data():
    data = Dataset("four", _table(4), None, [], {})
    net = UNet(UNetConfig(**TINY, neighbours=True))
    DiffusionObjective(Recipe.from_name("edm"), data=data).prepare(net)
    assert net.neighbours.values.dtype == torch.float16 and torch.equal(net.neighbours.values.float(), _table(4))


def test_runs_store_the_table_resume_bit_identically_and_sample_the_same_after_load(tmp_path):
    net = {"channels": 8, "channel_mult": [1, 2], "attn_levels": [], "neighbours": True}

    def cfg(out, steps):
        return TrainConfig(data="digits", steps=steps, batch_size=8, out=str(out), net=net, threads=1, seed=3,
                           checkpoint_every=2, sample_every=1000, nfe=3)

    start(cfg(tmp_path / "a", 4)).train(progress=False)
    start(cfg(tmp_path / "b", 2)).train(progress=False)
    resume(tmp_path / "b", steps=4).train(progress=False)
    a, b = open_checkpoint(tmp_path / "a"), open_checkpoint(tmp_path / "b")
    wa, wb = a.weights("model"), b.weights("model")
    assert wa["neighbours.values"].shape[1:] == (1, 8, 8) and len(wa["neighbours.values"]) > 1000
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert json.loads((tmp_path / "a" / "checkpoint-00000004" / "config.json").read_text())["net"]["neighbours"]
    import unmix

    x1 = unmix.load(tmp_path / "a").sample(3, seed=5, nfe=4)
    x2 = unmix.load(tmp_path / "b").sample(3, seed=5, nfe=4)
    assert torch.equal(x1, x2) and x1.shape == (3, 1, 8, 8)


def test_the_cli_flag_reaches_the_net_and_refuses_text_nets(tmp_path, capsys):
    import unmix.cli.commands  # noqa: F401  (registers every command)
    from unmix.cli.app import run_app

    common = ["--steps", "1", "--channels", "8", "--batch-size", "4", "--threads", "1", "--nfe", "2"]
    assert run_app(["train", "--data", "digits", "--neighbours", "--out", str(tmp_path / "on"), *common]) == 0
    assert open_checkpoint(tmp_path / "on").config["net"]["neighbours"] is True
    capsys.readouterr()
    assert run_app(["info", str(tmp_path / "on")]) == 0
    assert "privacy      holds its 1797 training items" in capsys.readouterr().out
    assert run_app(["train", "--data", "emoji", "--cond", "text", "--neighbours", "--out", str(tmp_path / "t"),
                    *common]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is for unconditional and label nets" in err


def test_no_preset_copies_by_default_and_the_copying_mode_is_asked_for_by_name(tmp_path, capsys):
    import unmix.cli.commands  # noqa: F401  (registers every command)
    from unmix.cli.app import run_app
    from unmix.training.config import network_config

    assert network_config(TrainConfig(), "latent", (4, 8, 8), 0, 1.0)["neighbours_leave_out"] == 1.0
    common = ["--data", "digits", "--steps", "1", "--channels", "8", "--threads", "1", "--dry-run"]

    def leave_out(*flags) -> float:
        assert run_app(["train", *common, "--out", str(tmp_path / "x"), *flags]) == 0
        return json.loads(capsys.readouterr().out)["net"]["neighbours_leave_out"]

    assert leave_out("--neighbours") == 1.0
    assert leave_out("--reproduce-training-set") == 0.0
    assert leave_out("--neighbours", "--leave-out", "0.5") == 0.5
    assert run_app(["train", *common, "--reproduce-training-set", "--leave-out", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--reproduce-training-set is --neighbours with --leave-out 0" in err
