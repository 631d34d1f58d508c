"""Fixtures for the strategy tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """Run the test with one torch thread: the models are tiny, and intra-op threads only add
    synchronisation (and huge delays when the machine is busy). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
