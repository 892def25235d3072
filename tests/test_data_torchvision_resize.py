"""data.resize "torchvision": the resized, padded, normalised batch and the boxes mapped back equal those of
torchvision's GeneralizedRCNNTransform (the oracle) on images of several sizes and aspect ratios."""
import numpy as np
import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detkit.data.coco import image_to_tensor
from detkit.data.collate import collate_detection
from detkit.data.transforms import build_transforms, padding_fill, resized_size, to_original_pixels
from detkit.models.fpn import IMAGENET_MEAN, IMAGENET_STD

SIZES = [(200, 90), (90, 200), (640, 480), (480, 640), (333, 517), (1000, 101)]  # (h, w)


def _torchvision(min_size: int, max_size: int) -> GeneralizedRCNNTransform:
    return GeneralizedRCNNTransform(min_size, max_size, list(IMAGENET_MEAN), list(IMAGENET_STD)).eval()


def _detkit_batch(arrays: list[np.ndarray], min_size: int, max_size: int) -> tuple[dict, list[tuple]]:
    """detkit's val path in torchvision mode: resize, collate; normalised as detkit's models do."""
    transform = build_transforms(False, min_size, max_size, resize="torchvision")
    items, scales = [], []
    for array in arrays:
        image, _, _, scale = transform(array, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        items.append((image_to_tensor(image), {}))
        scales.append(scale)
    batch = collate_detection(items, size_divisor=32, pad_value=padding_fill("torchvision"))
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    batch["normalised"] = (batch["images"] - mean) / std
    return batch, scales


@pytest.mark.parametrize("min_size, max_size", [(800, 1333), (320, 640), (128, 128)])
def test_resized_padded_batch_equals_torchvision(min_size, max_size):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in SIZES]
    batch, _ = _detkit_batch(arrays, min_size, max_size)
    with torch.no_grad():
        expected, _ = _torchvision(min_size, max_size)([image_to_tensor(array) for array in arrays])
    assert batch["image_sizes"] == [tuple(size) for size in expected.image_sizes]
    assert batch["normalised"].shape == expected.tensors.shape
    torch.testing.assert_close(batch["normalised"], expected.tensors, atol=2e-5, rtol=0)  # padding included
    assert [resized_size(h, w, min_size, max_size, "torchvision") for h, w in SIZES] == batch["image_sizes"]


@pytest.mark.parametrize("height, width", SIZES)
def test_boxes_map_back_as_torchvision(height, width):
    array = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    batch, (scale,) = _detkit_batch([array], 800, 1333)
    resized = batch["image_sizes"][0]
    boxes = torch.rand(50, 4, generator=torch.Generator().manual_seed(2)) * torch.tensor(resized[::-1] * 2)
    boxes = torch.cat([boxes[:, :2].minimum(boxes[:, 2:]), boxes[:, :2].maximum(boxes[:, 2:])], 1)
    result = _torchvision(800, 1333).postprocess([{"boxes": boxes.clone()}], [resized], [(height, width)])
    mapped = to_original_pixels(boxes, torch.tensor(scale, dtype=torch.float32))
    torch.testing.assert_close(mapped, result[0]["boxes"], atol=1e-3, rtol=0)
    assert float(mapped[:, 2::2].max()) > 0.5 * width  # the boxes really span the image, not a corner


def test_cv2_mode_is_unchanged_and_pads_with_zero():
    array = np.full((90, 200, 3), 255, np.uint8)
    image, _, _, scale = build_transforms(False, 128, 128)(array, np.zeros((0, 4), np.float32), np.zeros(0))
    assert image.dtype == np.uint8 and image.shape == (58, 128, 3) and scale == (128 / 200, 58 / 90)  # rounded
    batch = collate_detection([(image_to_tensor(image), {})], size_divisor=32, pad_value=padding_fill("cv2"))
    assert batch["images"].shape == (1, 3, 64, 128) and float(batch["images"][:, :, 58:].abs().max()) == 0.0


def test_unknown_resize_mode_names_the_key():
    from detkit.data.datamodule import DetectionDataModule
    with pytest.raises(ValueError, match=r"data.resize must be one of \('cv2', 'torchvision'\), got 'bilinear'"):
        DetectionDataModule("a", "b.json", "c", "d.json", resize="bilinear")


@pytest.mark.parametrize("height, width", SIZES)
def test_training_targets_scale_as_torchvision(height, width):
    array = np.random.default_rng(2).integers(0, 256, (height, width, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, width, height], [width * 0.2, height * 0.3, width * 0.7, height * 0.9]], np.float32)
    image, out_boxes, _, _ = build_transforms(True, 800, 1333, resize="torchvision")(array, boxes, np.array([0, 1]))
    transform = _torchvision(800, 1333).train()
    expected, targets = transform([image_to_tensor(array)], [{"boxes": torch.from_numpy(boxes.copy())}])
    assert image.shape[:2] == tuple(expected.image_sizes[0])
    torch.testing.assert_close(torch.from_numpy(out_boxes), targets[0]["boxes"], atol=1e-3, rtol=0)
