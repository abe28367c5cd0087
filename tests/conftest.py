import pytest
import torch

torch.set_num_threads(1)  # at import: module-scoped fixtures and collection run before the fixture below


@pytest.fixture(autouse=True)
def _one_thread():
    """Tests run single-threaded: predictable on a loaded 2-core machine."""
    torch.set_num_threads(1)
    yield
