"""detkit.ops.BoxCoder: hand-computed deltas, torchvision's BoxCoder as the oracle, clamp, batching, dtypes."""
import math

import pytest
import torch
from torchvision.models.detection import _utils as tv_utils

from detkit.ops import BoxCoder

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
WEIGHTS = [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (10.0, 5.0, 2.0, 3.0)]


def random_boxes(n: int, generator: torch.Generator) -> torch.Tensor:
    top_left = torch.rand(n, 2, generator=generator) * 1000
    return torch.cat([top_left, top_left + 1 + torch.rand(n, 2, generator=generator) * 300], dim=1)


def test_encode_decode_hand_computed():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [10.0, 20.0, 30.0, 30.0]])
    gt_boxes = torch.tensor([[2.0, 2.0, 12.0, 14.0], [10.0, 20.0, 30.0, 30.0]])
    # anchor 0: centre (5, 5), size (10, 10); gt 0: centre (7, 8), size (10, 12)
    expected = torch.tensor([[0.2, 0.3, 0.0, math.log(1.2)], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(BoxCoder().encode(gt_boxes, anchors), expected)
    weighted = torch.tensor([[2.0, 3.0, 0.0, 5 * math.log(1.2)], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(BoxCoder((10.0, 10.0, 5.0, 5.0)).encode(gt_boxes, anchors), weighted)
    torch.testing.assert_close(BoxCoder((10.0, 10.0, 5.0, 5.0)).decode(weighted, anchors), gt_boxes)
    # dx = 0.5, dw = log 2 on anchor 1 (centre (20, 25), size (20, 10)): centre 30, width 40
    torch.testing.assert_close(BoxCoder().decode(torch.tensor([[0.5, 0.0, math.log(2.0), 0.0]]), anchors[1:]),
                               torch.tensor([[10.0, 20.0, 50.0, 30.0]]))


@pytest.mark.parametrize("weights", WEIGHTS)
def test_equals_torchvision_box_coder(weights):
    generator = torch.Generator().manual_seed(0)
    gt_boxes, anchors = random_boxes(500, generator), random_boxes(500, generator)
    ours, theirs = BoxCoder(weights), tv_utils.BoxCoder(weights)
    torch.testing.assert_close(ours.encode(gt_boxes, anchors), theirs.encode_single(gt_boxes, anchors))
    deltas = torch.randn(500, 4, generator=generator) * 2  # some dw, dh beyond the clamp of log(1000 / 16)
    deltas[:10, 2:] = 20.0
    torch.testing.assert_close(ours.decode(deltas, anchors), theirs.decode_single(deltas, anchors))


def test_decode_inverts_encode():
    generator = torch.Generator().manual_seed(1)
    anchors = random_boxes(200, generator).double()
    # gt: the anchor shifted by up to one size and 0.2 to 4.2 times as wide / high (within the clamp)
    size = anchors[:, 2:] - anchors[:, :2]
    center = anchors[:, :2] + size * torch.rand(200, 2, generator=generator, dtype=torch.float64)
    half_size = size * (torch.rand(200, 2, generator=generator, dtype=torch.float64) * 4 + 0.2) / 2
    gt_boxes = torch.cat([center - half_size, center + half_size], dim=1)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(coder.decode(coder.encode(gt_boxes, anchors), anchors), gt_boxes)


def test_huge_deltas_are_clamped_to_finite_boxes():
    anchors = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    coder = BoxCoder((1.0, 1.0, 2.0, 2.0), bbox_xform_clip=math.log(1000 / 16))
    # dw / ww = 500 -> clamped to log(1000 / 16): width 16 * 1000 / 16 = 1000 around the centre 8
    boxes = coder.decode(torch.tensor([[0.0, 0.0, 1000.0, 1e30]]), anchors)
    torch.testing.assert_close(boxes, torch.tensor([[8.0 - 500, 8.0 - 500, 8.0 + 500, 8.0 + 500]]))
    assert torch.isfinite(coder.decode(torch.tensor([[0.0, 0.0, -1e30, float("inf")]]), anchors)).all()


def test_batched_deltas_with_broadcast_anchors():
    generator = torch.Generator().manual_seed(2)
    anchors = random_boxes(30, generator)  # (N, 4)
    deltas = torch.randn(3, 30, 4, generator=generator)  # (B, N, 4)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    decoded = coder.decode(deltas, anchors)
    assert decoded.shape == (3, 30, 4)
    for image in range(3):
        torch.testing.assert_close(decoded[image], coder.decode(deltas[image], anchors))
    torch.testing.assert_close(coder.encode(decoded, anchors), deltas, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    generator = torch.Generator().manual_seed(3)
    gt_boxes, anchors = random_boxes(100, generator).to(dtype), random_boxes(100, generator).to(dtype)
    deltas = torch.randn(100, 4, generator=generator).to(dtype)
    coder, reference = BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    encoded, decoded = coder.encode(gt_boxes, anchors), coder.decode(deltas, anchors)
    assert encoded.dtype == torch.float32 and decoded.dtype == torch.float32
    torch.testing.assert_close(encoded, reference.encode_single(gt_boxes.float(), anchors.float()))
    torch.testing.assert_close(decoded, reference.decode_single(deltas.float(), anchors.float()))


def test_decode_is_differentiable_in_deltas():
    generator = torch.Generator().manual_seed(4)
    anchors = random_boxes(4, generator).double()
    deltas = (torch.randn(4, 4, generator=generator, dtype=torch.float64) * 0.5).requires_grad_()
    coder = BoxCoder((10.0, 5.0, 5.0, 2.0))
    assert torch.autograd.gradcheck(lambda d: coder.decode(d, anchors), (deltas,))


def test_empty_inputs():
    coder = BoxCoder()
    assert coder.encode(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 4)
    assert coder.decode(torch.zeros(2, 0, 4), torch.zeros(0, 4)).shape == (2, 0, 4)


def test_bad_weights():
    with pytest.raises(ValueError, match="4 positive numbers"):
        BoxCoder((1.0, 1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="4 positive numbers"):
        BoxCoder((1.0, 1.0, 1.0))


@requires_cuda
def test_cuda_equals_torchvision():
    generator = torch.Generator().manual_seed(5)
    gt_boxes, anchors = random_boxes(1000, generator).cuda(), random_boxes(1000, generator).cuda()
    deltas = torch.randn(1000, 4, generator=generator).cuda()
    ours, theirs = BoxCoder((10.0, 10.0, 5.0, 5.0)), tv_utils.BoxCoder((10.0, 10.0, 5.0, 5.0))
    torch.testing.assert_close(ours.encode(gt_boxes, anchors), theirs.encode_single(gt_boxes, anchors))
    torch.testing.assert_close(ours.decode(deltas, anchors), theirs.decode_single(deltas, anchors))
