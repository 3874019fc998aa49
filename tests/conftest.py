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


# Markers that transformers' common test suite (tests/models/hybrid_gru/test_transformers_common.py) puts on its tests.
_SUITE_MARKERS = (
    "accelerate_tests", "flash_attn_test", "flash_attn_3_test", "flash_attn_4_test", "is_agent_test",
    "is_expert_parallel_test", "is_fsdp_test", "is_pipeline_test", "is_staging_test", "is_tensor_parallel_test",
    "is_training_test", "order", "torch_compile_test",
)  # fmt: skip


def pytest_configure(config):
    for marker in _SUITE_MARKERS:
        config.addinivalue_line("markers", f"{marker}: a marker of transformers' common test suite")
