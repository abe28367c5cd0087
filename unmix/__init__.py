"""unmix: denoising diffusion models written around one denoiser interface D(x, sigma, cond) -> x0_hat."""

# The three-line Python API. The module unmix.train is imported first so that its name here ends up
# bound to the function; `from unmix.train import Trainer` keeps working.
import unmix.train  # noqa: E402,F401
from unmix.api import Model, load, sample, save_grid, train  # noqa: E402
from unmix.samplers import list_samplers  # noqa: E402,F401
