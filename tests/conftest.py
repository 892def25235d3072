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


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    """A small built-in shapes dataset (32 train, 8 val images of 128 px), made once per test module."""
    from detkit.data.shapes import generate_shapes
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(str(root), num_train=32, num_val=8, seed=0, workers=1)
    return root
