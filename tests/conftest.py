"""Fixtures shared by the test files."""
import pytest
import torch


@pytest.fixture
def threads():
    """Call it to run with that many torch threads (detkit.ops.roi_align's channel chunks); restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def one_thread(threads):
    """One thread: on a shared 2-core machine, 2 OpenMP threads next to another busy process made a
    training step ~80x slower (spinning threads waiting for each other); one thread is fast either way."""
    threads(1)
