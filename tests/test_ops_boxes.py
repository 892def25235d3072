"""detkit.ops.boxes: hand-computed cases, torchvision.ops as the oracle, edge cases (empty, zero area, fp16)."""
import pytest
import torch
import torchvision

from detkit.ops import (
    box_area,
    box_iou,
    clip_boxes_to_image,
    generalized_box_iou,
    paired_generalized_box_iou,
    remove_small_boxes,
)
from detkit.ops import boxes as boxes_module

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def random_boxes(n: int, generator: torch.Generator, extent: float = 1000.0, max_size: float = 200.0) -> torch.Tensor:
    """(n, 4) float32 xyxy boxes, some of them zero-width or zero-height."""
    top_left = torch.rand(n, 2, generator=generator) * extent
    size = torch.rand(n, 2, generator=generator) * max_size
    size[::7, 0] = 0  # degenerate boxes must not give NaN
    return torch.cat([top_left, top_left + size], dim=1)


def torchvision_giou_without_nan(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """torchvision's GIoU is NaN where the union U is 0 (its IoU is 0 / 0); there GIoU = 0 - (C - 0) / C:
    -1 if the enclosing box has area C > 0, and 0 (the fraction taken as 0) where C is 0 too."""
    expected = torchvision.ops.generalized_box_iou(boxes1, boxes2)
    hull_size = torch.maximum(boxes1[:, None, 2:], boxes2[:, 2:]) - torch.minimum(boxes1[:, None, :2], boxes2[:, :2])
    union_zero_value = torch.where(hull_size.prod(dim=2) > 0, -1.0, 0.0)
    return torch.where(expected.isnan(), union_zero_value, expected)


def test_box_area_hand_computed():
    boxes = torch.tensor([[0.0, 0.0, 2.0, 3.0], [1.0, 1.0, 1.0, 5.0], [-1.0, -2.0, 3.0, 2.0]])
    assert torch.equal(box_area(boxes), torch.tensor([6.0, 0.0, 16.0]))


def test_box_iou_hand_computed():
    boxes1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    boxes2 = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 6.0, 6.0], [1.0, 1.0, 1.0, 1.0]])
    expected = torch.tensor([
        [1 / 7, 1.0, 0.0, 0.0],
        [0.0, 0.0, 0.0, 0.0],  # the point box: its union with another point is 0 -> IoU 0, not NaN
    ])
    torch.testing.assert_close(box_iou(boxes1, boxes2), expected)


def test_generalized_box_iou_hand_computed():
    boxes1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    boxes2 = torch.tensor([[1.0, 1.0, 3.0, 3.0], [4.0, 0.0, 6.0, 2.0], [1.0, 1.0, 1.0, 1.0]])
    # hull of the first pair is 3x3 = 9, union 7: 1/7 - 2/9; disjoint pair: hull 6x2 = 12, union 8: 0 - 4/12;
    # a box and a point inside it: IoU 0, hull = the box (4), union 4: 0; point with point: C = 0 -> 0.
    # point (1,1) with the box (1,1)-(3,3): hull 4, union 4 -> 0; with (4,0)-(6,2): hull 5x2 = 10, union 4 -> -0.6
    expected = torch.tensor([
        [1 / 7 - 2 / 9, -1 / 3, 0.0],
        [0.0, -0.6, 0.0],
    ])
    torch.testing.assert_close(generalized_box_iou(boxes1, boxes2), expected)


@pytest.mark.parametrize("block_elements", [boxes_module.CPU_BLOCK_ELEMENTS, 1000])
def test_pairwise_equal_torchvision_on_random_boxes(monkeypatch, block_elements):
    """The default block size and one that cuts the 300 rows into 43 blocks of 7 (and a remainder)."""
    monkeypatch.setattr(boxes_module, "CPU_BLOCK_ELEMENTS", block_elements)
    generator = torch.Generator().manual_seed(0)
    boxes1, boxes2 = random_boxes(300, generator), random_boxes(140, generator)
    # torchvision gives NaN for pairs of two zero-area boxes (union 0): those are 0 here
    expected = torchvision.ops.box_iou(boxes1, boxes2)
    assert expected.isnan().any()
    torch.testing.assert_close(box_iou(boxes1, boxes2), torch.nan_to_num(expected, nan=0.0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(generalized_box_iou(boxes1, boxes2), torchvision_giou_without_nan(boxes1, boxes2),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(box_area(boxes1), torchvision.ops.box_area(boxes1))


def test_degenerate_boxes_give_zero_not_nan():
    points = torch.tensor([[5.0, 5.0, 5.0, 5.0], [5.0, 5.0, 5.0, 5.0], [0.0, 0.0, 0.0, 7.0]])
    assert torch.equal(box_iou(points, points), torch.zeros(3, 3))
    # identical points: C = 0 -> 0; a point and the segment: U = 0, C = 5 x 7 -> 0 - 35 / 35 = -1
    assert torch.equal(generalized_box_iou(points, points), torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0],
                                                                          [-1.0, -1.0, 0.0]]))


@pytest.mark.parametrize("function", [box_iou, generalized_box_iou])
def test_empty_inputs(function):
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    assert function(torch.zeros(0, 4), boxes).shape == (0, 3)
    assert function(boxes, torch.zeros(0, 4)).shape == (3, 0)
    assert function(torch.zeros(0, 4), torch.zeros(0, 4)).shape == (0, 0)
    assert box_area(torch.zeros(0, 4)).shape == (0,)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_boxes_near_1e4_computed_in_float32(dtype):
    """Areas near 1e8 overflow fp16 (max 65504): detkit computes in float32 and returns float32."""
    generator = torch.Generator().manual_seed(1)
    boxes1 = random_boxes(20, generator, extent=9000.0, max_size=1000.0).to(dtype)
    boxes2 = random_boxes(30, generator, extent=9000.0, max_size=1000.0).to(dtype)
    iou = box_iou(boxes1, boxes2)
    assert iou.dtype == torch.float32
    torch.testing.assert_close(iou, torch.nan_to_num(torchvision.ops.box_iou(boxes1.float(), boxes2.float())))
    giou = generalized_box_iou(boxes1, boxes2)
    assert giou.dtype == torch.float32
    torch.testing.assert_close(giou, torchvision_giou_without_nan(boxes1.float(), boxes2.float()))
    assert box_area(boxes1).dtype == torch.float32
    assert torch.isfinite(box_area(boxes1)).all() and box_area(boxes1).max() > 65504


def test_float64_stays_float64():
    boxes = torch.tensor([[0.0, 0.0, 3.0, 3.0]], dtype=torch.float64)
    assert box_iou(boxes, boxes).dtype == torch.float64
    assert generalized_box_iou(boxes, boxes).dtype == torch.float64


def test_gradients_equal_torchvision():
    generator = torch.Generator().manual_seed(2)
    boxes1 = random_boxes(6, generator).double().requires_grad_()
    boxes2 = random_boxes(5, generator).double()
    boxes2[:, 2:] += 300  # overlap everywhere, so the gradients are not all zero
    for ours, theirs in [(box_iou, torchvision.ops.box_iou),
                         (generalized_box_iou, torchvision.ops.generalized_box_iou)]:
        weights = torch.rand(6, 5, generator=generator, dtype=torch.float64)
        (grad,) = torch.autograd.grad((ours(boxes1, boxes2) * weights).sum(), boxes1)
        (expected,) = torch.autograd.grad((theirs(boxes1, boxes2) * weights).sum(), boxes1)
        assert expected.abs().sum() > 0
        torch.testing.assert_close(grad, expected)


def test_wrong_shape_names_the_argument():
    with pytest.raises(ValueError, match=r"boxes2 must be an \(N, 4\) tensor"):
        box_iou(torch.zeros(2, 4), torch.zeros(2, 5))


def test_clip_boxes_to_image():
    boxes = torch.tensor([[-5.0, 2.0, 30.0, 50.0], [3.0, -1.0, 7.0, 9.0]])
    expected = torch.tensor([[0.0, 2.0, 20.0, 40.0], [3.0, 0.0, 7.0, 9.0]])
    assert torch.equal(clip_boxes_to_image(boxes, (40, 20)), expected)
    generator = torch.Generator().manual_seed(3)
    batched = random_boxes(24, generator).view(2, 12, 4) - 100  # (B, N, 4): leading dims are fine
    assert torch.equal(clip_boxes_to_image(batched, (500, 300)),
                       torchvision.ops.clip_boxes_to_image(batched, (500, 300)))


def test_remove_small_boxes():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 5.0], [0.0, 0.0, 0.5, 5.0], [0.0, 0.0, 5.0, 0.9], [2.0, 2.0, 4.0, 4.0]])
    assert torch.equal(remove_small_boxes(boxes, 1.0), torch.tensor([0, 3]))
    generator = torch.Generator().manual_seed(4)
    boxes = random_boxes(200, generator)
    assert torch.equal(remove_small_boxes(boxes, 50.0), torchvision.ops.remove_small_boxes(boxes, 50.0))
    assert remove_small_boxes(torch.zeros(0, 4), 1.0).shape == (0,)


@requires_cuda
def test_cuda_equals_torchvision():
    generator = torch.Generator().manual_seed(5)
    boxes1, boxes2 = random_boxes(300, generator).cuda(), random_boxes(500, generator).cuda()
    torch.testing.assert_close(box_iou(boxes1, boxes2), torch.nan_to_num(torchvision.ops.box_iou(boxes1, boxes2)))
    torch.testing.assert_close(generalized_box_iou(boxes1, boxes2), torchvision_giou_without_nan(boxes1, boxes2))
    assert box_iou(boxes1.half(), boxes2.half()).dtype == torch.float32


def test_paired_giou_by_hand_and_against_torchvision_giou_loss():
    # identical boxes: 1; disjoint unit squares 1 px apart: IoU 0, hull 3 x 1, union 2 -> 0 - (3 - 2) / 3
    boxes1 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    boxes2 = torch.tensor([[0.0, 0.0, 2.0, 2.0], [2.0, 0.0, 3.0, 1.0]])
    assert paired_generalized_box_iou(boxes1, boxes2).tolist() == pytest.approx([1.0, -1 / 3])
    generator = torch.Generator().manual_seed(0)
    first, second = random_boxes(300, generator), random_boxes(300, generator)
    first[:, 2:] += 1.0  # positive areas, as decoded predictions have
    second[:, 2:] += 1.0
    paired = paired_generalized_box_iou(first, second)  # (P,)
    torch.testing.assert_close(paired, generalized_box_iou(first, second).diagonal(), rtol=1e-5, atol=1e-6)
    loss = torchvision.ops.generalized_box_iou_loss(first, second, reduction="none", eps=1e-7)
    torch.testing.assert_close(1.0 - paired, loss, rtol=1e-5, atol=1e-6)
