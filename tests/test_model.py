"""Model.save and load are a symmetric pair; Model.sample's seeds, generators and argument checks."""
import pytest
import torch

import unmix
from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.model import Model, load
from unmix.nets import UNet, UNetConfig

DATA = {"name": "digits", "shape": [1, 8, 8], "size": 10, "class_names": [str(i) for i in range(3)]}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, channels=8, channel_mult=(1, 2), num_res_blocks=1, attn_levels=(1,),
                          num_classes=3))
    with torch.no_grad():  # random, non-trivial weights everywhere (zero-initialised output layers included)
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return Model(net, Recipe.from_name("edm", sigma_data=0.4), DATA)


def test_save_then_load_samples_bit_identical_images(model, tmp_path):
    folder = model.save(tmp_path / "my model")
    again = load(folder)
    assert again.recipe.to_dict() == model.recipe.to_dict() and again.data == model.data
    for weights in ("ema", "model"):
        assert all(torch.equal(a, b) for a, b in zip(load(folder, weights=weights).net.state_dict().values(),
                                                      model.net.state_dict().values()))
    a = model.sample(6, seed=4, nfe=5, labels=[0, 1, 2, 0, 1, 2], guidance=2.0)
    b = again.sample(6, seed=4, nfe=5, labels=[0, 1, 2, 0, 1, 2], guidance=2.0)
    assert torch.equal(a, b) and a.std() > 0.05


def test_save_replaces_atomically_and_refuses_a_file(model, tmp_path):
    model.save(tmp_path / "m")
    model.save(tmp_path / "m")  # saving again over the same folder
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "ema.safetensors", "model.safetensors"]
    assert not list(tmp_path.glob(".*.tmp-*")) and not list(tmp_path.glob(".*.old-*"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(UnmixError, match="is a file"):
        model.save(tmp_path / "file")


def test_generator_and_seeds_give_the_same_samples(model):
    by_seed = model.sample(3, seed=7, nfe=4)
    by_generators = model.sample(3, nfe=4, generator=[torch.Generator().manual_seed(s) for s in (7, 8, 9)])
    assert torch.equal(by_seed, by_generators)
    one = model.sample(3, nfe=4, generator=torch.Generator().manual_seed(1))
    assert one.shape == (3, 1, 8, 8) and not torch.equal(one[0], one[1])
    with pytest.raises(UnmixError, match="either seeds= or generator="):
        model.sample(2, seeds=[1, 2], generator=torch.Generator())


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 0}, "integer >= 1"), ({"n": "4"}, "integer >= 1"), ({"n": 2, "seeds": [1]}, "1 seeds for 2"),
    ({"n": 2, "labels": "cat"}, "unknown class 'cat'"), ({"n": 2, "labels": 9}, "out of range"),
    ({"n": 2, "batch_size": 0}, "batch_size"), ({"n": 2, "sampler": "magic"}, "unknown sampler"),
])
def test_bad_sample_arguments_are_unmix_errors(model, kwargs, message):
    with pytest.raises(UnmixError, match=message):
        model.sample(**kwargs, nfe=2)


def test_inpaint_and_edit_take_labels_guidance_and_seeds_like_sample(model):
    image = torch.zeros(1, 8, 8)
    mask = torch.zeros(1, 8, 8, dtype=torch.bool)
    mask[:, 4:] = True
    x = model.inpaint(image, mask, 3, seed=2, labels=1, guidance=2.0, nfe=4, method="replace")
    assert torch.equal(x[:, :, :4], image[None, :, :4].expand(3, -1, -1, -1))
    again = model.inpaint(image, mask, 1, seed=3, labels=1, guidance=2.0, nfe=4, method="replace")
    assert torch.allclose(x[1:2], again, atol=1e-5)  # completion i uses seed + i (up to batched rounding)
    edits = model.edit(image, 0.5, 2, seed=0, labels="2", nfe=4)
    assert edits.shape == (2, 1, 8, 8) and not torch.equal(edits[0], edits[1])


def test_python_errors_speak_python(tmp_path):
    with pytest.raises(UnmixError, match=r"steps= must be int"):
        unmix.train("digits", steps="ten", out=str(tmp_path / "r"), progress=False)
    with pytest.raises(UnmixError, match="can draw images"):
        unmix.save_grid(torch.zeros(3), tmp_path / "g.png")


def _walked(model, **kwargs) -> list[float]:
    seen = []
    model.sample(2, callback=lambda step, sigma, x, x0: seen.append(float(sigma)), **kwargs)
    return seen


def test_the_denoiser_is_one_object_while_net_and_recipe_stay(model):
    """Samplers cache per denoiser object (the pilot's 3-step grid): a new object per call would redo the pilot."""
    from unmix.samplers import _pilot_cache

    m = Model(model.net, model.recipe, DATA)
    assert m.denoiser is m.denoiser
    m.sample(2, nfe=3)
    assert m.denoiser in _pilot_cache
    m.recipe = Recipe.from_name("edm", sigma_data=0.4)
    assert m.denoiser is not None and m.denoiser not in _pilot_cache  # a new recipe: a new denoiser


def test_few_step_grids_are_clamped_into_the_recipe_range_not_stretched_onto_it(model):
    """A budget's grid (narrow for few steps) is kept where it fits the recipe's range and clamped where it does
    not; a model's own sampling (a distilled model's) walks the whole range it was trained on."""
    from unmix.samplers import default_sigmas

    budget = default_sigmas("auto", 4, dim=64)[:-1].tolist()
    assert 0.002 < min(budget) and max(budget) < 80  # strictly inside EDM's range: unchanged
    assert _walked(model, sampler="auto", nfe=4) == pytest.approx(budget, rel=1e-6)
    narrow = Model(model.net, Recipe.from_name("edm", sigma_data=0.4, sigma_max=1.0), DATA)
    walked = _walked(narrow, sampler="auto", nfe=4)  # the top end clamped to 1, the bottom kept, still 4 levels
    assert walked[0] == pytest.approx(1.0) and walked[-1] == pytest.approx(min(budget), rel=1e-6)
    assert len(walked) == 4 and walked == sorted(walked, reverse=True) and len(set(walked)) == 4
    walked = _walked(narrow, sampler="auto", nfe=3)  # the pilot's candidates are clamped into the range too
    assert len(walked) == 3 and 1.0 >= walked[0] > walked[1] > walked[2] >= 0.002
    own = Model(model.net, model.recipe, DATA, sampling={"sampler": "euler", "nfe": 4})
    walked = _walked(own)
    assert len(walked) == 4 and walked[0] == pytest.approx(80.0) and min(walked) > 0.002
    assert _walked(own, sampler="euler", nfe=4, sigma_max=10.0)[0] == pytest.approx(10.0)  # explicit ends win
