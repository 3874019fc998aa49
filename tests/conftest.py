import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_torch_thread():
    """One intra-op thread for the test: tiny models gain nothing from threads, and on a busy 2-core machine two
    OpenMP threads ran 10-30x slower steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
