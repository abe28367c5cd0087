import sys
from pathlib import Path

import pytest
import torch

# the diffusers bridge lives with the benchmarks; tests reuse it for parity checks
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded: predictable on a loaded 2-core machine."""
    torch.set_num_threads(1)
    yield
