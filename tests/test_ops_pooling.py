"""detkit.ops.roi_align: bit-identical to torchvision.ops.roi_align, forward and backward, threaded or not."""
import importlib

import pytest
import torch
import torchvision

from detkit.ops import roi_align

pooling = importlib.import_module("detkit.ops.pooling")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_rois(n: int, batch: int, extent: float, seed: int, dtype=torch.float32) -> torch.Tensor:
    """(n, 5) rows (batch index, x1, y1, x2, y2); some boxes reach outside the image, some are tiny."""
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(0, batch, (n, 1), generator=generator).to(dtype)
    corner = torch.rand(n, 2, generator=generator, dtype=dtype) * extent * 1.1 - 0.05 * extent
    size = torch.rand(n, 2, generator=generator, dtype=dtype) * extent / 2 + 0.1
    return torch.cat([index, corner, corner + size], 1)


def features_and_rois(channels: int = 16, num_rois: int = 300, dtype=torch.float32, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(3, channels, 20, 24, generator=generator, dtype=dtype)  # stride 4 of an 80 x 96 image
    return features, random_rois(num_rois, 3, 90.0, seed, dtype)


def pool_and_grad(function, features, rois, grad, **kwargs):
    features = features.clone().requires_grad_()
    pooled = function(features, rois, **kwargs)
    pooled.backward(grad)
    return pooled.detach(), features.grad


@pytest.mark.parametrize("chunks", [2, 3, 16])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_threaded_pooling_equals_torchvision_bit_for_bit(threads, chunks, aligned, sampling_ratio):
    threads(chunks)
    features, rois = features_and_rois()
    settings = dict(output_size=(7, 5), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)
    grad = torch.randn(len(rois), features.shape[1], 7, 5, generator=torch.Generator().manual_seed(1))
    pooled, features_grad = pool_and_grad(roi_align, features, rois, grad, **settings)
    expected, expected_grad = pool_and_grad(torchvision.ops.roi_align, features, rois, grad, **settings)

    assert torch.equal(pooled, expected)
    assert torch.equal(features_grad, expected_grad)
    assert features_grad.abs().sum() > 0  # the RoIs do cover the map


def test_the_threaded_path_is_taken_only_where_it_pays(threads):
    threads(2)
    features, rois = features_and_rois(channels=64, num_rois=1024)
    assert pooling._channel_chunks(features, rois, (7, 7)) == 2
    pooled = roi_align(features.requires_grad_(), rois, (7, 7), 0.25, 2)
    assert type(pooled.grad_fn).__name__ == "_ThreadedRoIAlignBackward"
    assert pooling._channel_chunks(features, rois[:10], (7, 7)) == 1  # 10 * 64 * 49 values: too few
    assert pooling._channel_chunks(features.half(), rois, (7, 7)) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert pooling._channel_chunks(features, rois, (7, 7)) == 1
    threads(1)
    assert pooling._channel_chunks(features, rois, (7, 7)) == 1


def test_float64_gradcheck_through_the_threads(threads, monkeypatch):
    threads(2)
    monkeypatch.setattr(pooling, "MIN_PARALLEL_OUTPUTS", 1)
    features, rois = features_and_rois(channels=4, num_rois=5, dtype=torch.float64)
    features = features[:, :, :6, :6].contiguous().requires_grad_()
    rois = random_rois(5, 3, 22.0, seed=2, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda f: roi_align(f, rois, (2, 2), 0.25, 2), (features,))


def test_no_rois_gives_empty_output_and_zero_gradient(threads, monkeypatch):
    threads(2)
    monkeypatch.setattr(pooling, "MIN_PARALLEL_OUTPUTS", 0)  # take the threaded path even with nothing to pool
    features = torch.randn(2, 8, 10, 10, requires_grad=True)
    pooled = roi_align(features, torch.zeros(0, 5), (7, 7), 0.5, 2)
    assert pooled.shape == (0, 8, 7, 7)
    pooled.sum().backward()
    assert torch.equal(features.grad, torch.zeros_like(features))


@requires_cuda
def test_cuda_matches_torchvision():
    features, rois = features_and_rois()
    features, rois = features.cuda(), rois.cuda()
    expected = torchvision.ops.roi_align(features, rois, (7, 7), 0.25, 2)
    assert torch.equal(roi_align(features, rois, (7, 7), 0.25, 2), expected)


def test_pool_threads_keep_to_one_openmp_thread_and_leave_the_main_thread_alone(threads):
    threads(2)
    thread_map = importlib.import_module("detkit.ops.threads").thread_map
    assert thread_map(lambda _: torch.get_num_threads(), [0, 1]) == [1, 1]
    assert torch.get_num_threads() == 2
