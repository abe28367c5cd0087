"""The sampler names users know resolve to an unmix sampler and grid."""
import pytest
import torch

from unmix.errors import UnmixError
from unmix.losses import Recipe
from unmix.sampler_names import NAMES, Named, grid_sigmas, lookup, named_sampler, sampler_names
from unmix.samplers import SAMPLERS


@pytest.mark.parametrize("name,want", [
    ("DPM++ 2M Karras", Named("dpmpp_2m", "karras")), ("dpm++  2m KARRAS", Named("dpmpp_2m", "karras")),
    ("Euler a", Named("euler_ancestral", "normal")), ("LMS", Named("ipndm_v", "normal")),
    ("DDIM", Named("ddim", "model")), ("UniPC", Named("unipc", "normal")),
    ("dpmpp_2m karras", Named("dpmpp_2m", "karras")), ("lms", Named("ipndm_v", "normal")),
    ("DPMSolverMultistepScheduler", Named("dpmpp_2m", "model", True)),
])
def test_names_resolve(name, want):
    assert lookup(name) == want


def test_every_name_is_an_unmix_sampler_and_unknown_names_are_one_line():
    assert all(v.sampler in SAMPLERS for v in NAMES.values()) and set(SAMPLERS) <= set(sampler_names())
    with pytest.raises(UnmixError, match="unknown sampler 'DPM fast'") as e:
        lookup("DPM fast")
    assert "\n" not in str(e.value)


def test_grids_on_a_discrete_model():
    recipe = Recipe.from_name("ddpm")
    table = recipe.discrete
    normal = grid_sigmas(recipe, "normal", 10)
    assert normal[-1] == 0 and len(normal) == 11
    torch.testing.assert_close(table.sigma_to_t(normal[:-1]), torch.linspace(999, 0, 10, dtype=torch.float64))
    lo, hi = recipe.sigma_range()
    for grid in ("karras", "exponential"):
        g = grid_sigmas(recipe, grid, 6)
        assert float(g[0]) == pytest.approx(hi) and float(g[-2]) == pytest.approx(lo)
    torch.testing.assert_close(grid_sigmas(recipe, "model", 4)[:-1], table.sigmas[torch.tensor([750, 500, 250, 0])])


def test_named_sampler_spends_the_budget():
    recipe = Recipe.from_name("ddpm")
    sampler, options = named_sampler("Heun", recipe, 9)  # Heun: 2 calls a step, 1 into sigma = 0
    assert sampler == "heun" and len(options["sigmas"]) == 6
    assert named_sampler("euler", recipe, 9) == ("euler", {})  # unmix's own names keep their own grids
    edm = Recipe.from_name("edm")
    torch.testing.assert_close(named_sampler("DPM++ 2M", edm, 5)[1]["sigmas"], grid_sigmas(edm, "exponential", 5))
