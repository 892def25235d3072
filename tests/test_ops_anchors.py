"""detkit.ops.AnchorGenerator: a hand-computed 2x2 map, torchvision's AnchorGenerator as the oracle, caching."""
import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TorchvisionAnchorGenerator
from torchvision.models.detection.image_list import ImageList

from detkit.ops import AnchorGenerator
from detkit.ops import anchors as anchors_module

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_two_by_two_map_hand_computed():
    generator = AnchorGenerator(sizes=((4, 8),), aspect_ratios=((1.0, 4.0),))
    # per location, ratio-major, size-minor: (r=1, s=4) 4x4, (r=1, s=8) 8x8, (r=4, s=4) 2x8, (r=4, s=8) 4x16;
    # locations row by row: centres (0, 0), (16, 0), (0, 16), (16, 16) at stride 16
    expected = torch.tensor([
        [-2.0, -2.0, 2.0, 2.0], [-4.0, -4.0, 4.0, 4.0], [-1.0, -4.0, 1.0, 4.0], [-2.0, -8.0, 2.0, 8.0],
        [14.0, -2.0, 18.0, 2.0], [12.0, -4.0, 20.0, 4.0], [15.0, -4.0, 17.0, 4.0], [14.0, -8.0, 18.0, 8.0],
        [-2.0, 14.0, 2.0, 18.0], [-4.0, 12.0, 4.0, 20.0], [-1.0, 12.0, 1.0, 20.0], [-2.0, 8.0, 2.0, 24.0],
        [14.0, 14.0, 18.0, 18.0], [12.0, 12.0, 20.0, 20.0], [15.0, 12.0, 17.0, 20.0], [14.0, 8.0, 18.0, 24.0],
    ])
    (anchors,) = generator([(2, 2)], [16])
    assert anchors.dtype == torch.float32
    assert torch.equal(anchors, expected)
    assert generator.num_anchors_per_location() == [4]
    (shifted,) = AnchorGenerator(((4, 8),), ((1.0, 4.0),), offset=8.0)([(2, 2)], [16])
    assert torch.equal(shifted, expected + 8.0)


def test_non_square_map_is_row_major():
    (anchors,) = AnchorGenerator(((2,),), ((1.0,),))([(2, 3)], [10])  # H = 2 rows, W = 3 columns
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    assert torch.equal(centres, torch.tensor([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0],
                                              [0.0, 10.0], [10.0, 10.0], [20.0, 10.0]]))


def test_sizes_and_ratios_up_to_rounding():
    sizes, ratios = (32.0, 45.0, 90.0), (0.5, 1.0, 2.0, 3.0)
    (anchors,) = AnchorGenerator((sizes,), (ratios,))([(1, 1)], [8])
    widths, heights = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    expected_sizes = torch.tensor(sizes).repeat(len(ratios))  # size-minor
    expected_ratios = torch.tensor(ratios).repeat_interleave(len(sizes))  # ratio-major
    # corners rounded to whole pixels: each side is within 1 pixel of the exact one
    torch.testing.assert_close(widths, expected_sizes / expected_ratios.sqrt(), atol=1.0, rtol=0.0)
    torch.testing.assert_close(heights, expected_sizes * expected_ratios.sqrt(), atol=1.0, rtol=0.0)


def test_equals_torchvision_anchor_generator():
    sizes = ((32, 40), (64, 80), (128, 160))
    ratios = ((0.5, 1.0, 2.0),) * 3
    feature_shapes, strides = [(16, 20), (8, 10), (4, 5)], [8, 16, 32]
    ours = AnchorGenerator(sizes, ratios)(feature_shapes, strides)
    images = ImageList(torch.zeros(1, 3, 128, 160), [(128, 160)])
    features = [torch.zeros(1, 4, h, w) for h, w in feature_shapes]
    (theirs,) = TorchvisionAnchorGenerator(sizes, ratios)(images, features)
    assert torch.equal(torch.cat(ours), theirs)
    assert [len(a) for a in ours] == [h * w * 6 for h, w in feature_shapes]


def test_cache_returns_the_same_tensors_and_is_bounded(monkeypatch):
    monkeypatch.setattr(anchors_module, "CACHE_SIZE", 2)
    generator = AnchorGenerator(((16,), (32,)), ((1.0,), (1.0,)))
    first = generator([(4, 4), (2, 2)], [8, 16])
    again = generator([torch.Size([4, 4]), torch.Size([2, 2])], (8, 16))  # shapes as feature maps give them
    assert all(a is b for a, b in zip(first, again))
    half = generator([(4, 4), (2, 2)], [8, 16], dtype=torch.float16)
    assert half[0] is not first[0] and half[0].dtype == torch.float16
    assert generator([(4, 4), (2, 2)], [8, 16])[0] is first[0]  # now the most recently used
    generator([(5, 5), (3, 3)], [8, 16])  # a third key evicts the least recently used: float16
    assert generator([(4, 4), (2, 2)], [8, 16])[0] is first[0]
    assert generator([(4, 4), (2, 2)], [8, 16], dtype=torch.float16)[0] is not half[0]


def test_dtype_and_empty_map():
    generator = AnchorGenerator(((16,), (32,)), ((0.5, 2.0), (1.0,)))
    half, full = generator([(3, 3), (0, 4)], [8, 16], dtype=torch.float16), generator([(3, 3), (0, 4)], [8, 16])
    assert half[0].dtype == torch.float16 and torch.equal(half[0].float(), full[0])
    assert full[1].shape == (0, 4)
    assert generator.num_anchors_per_location() == [2, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="one aspect_ratios tuple per level"):
        AnchorGenerator(((16,), (32,)), ((1.0,),))
    with pytest.raises(ValueError, match="positive numbers"):
        AnchorGenerator(((16, -1),), ((1.0,),))
    with pytest.raises(ValueError, match="has 2 levels, got 1 feature shapes"):
        AnchorGenerator(((16,), (32,)), ((1.0,), (1.0,)))([(4, 4)], [8])


@requires_cuda
def test_cuda_equals_cpu():
    generator = AnchorGenerator(((32, 64),), ((0.5, 1.0, 2.0),), offset=4.0)
    (on_cuda,) = generator([(10, 12)], [16], device="cuda")
    assert on_cuda.is_cuda
    assert torch.equal(on_cuda.cpu(), generator([(10, 12)], [16])[0])
