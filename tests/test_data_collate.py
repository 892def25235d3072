"""collate_detection: padded batch shapes, zero padding at bottom/right, sizes and targets kept."""
import pickle

import pytest
import torch

from detkit.data.collate import collate_detection, make_collate_fn, padded_size


def item(height, width, fill, image_id):
    return torch.full((3, height, width), fill), {"image_id": image_id, "boxes": torch.zeros(0, 4)}


def test_padded_size():
    assert padded_size(64, 65, 32) == (64, 96)
    assert padded_size(1, 33, 32) == (32, 64)
    assert padded_size(50, 70, 1) == (50, 70)


def test_pads_to_multiple_of_divisor_with_zeros():
    batch = collate_detection([item(50, 70, 0.5, 1), item(64, 40, 0.25, 2)], size_divisor=32)
    images = batch["images"]
    assert images.shape == (2, 3, 64, 96) and images.dtype == torch.float32
    assert batch["image_sizes"] == [(50, 70), (64, 40)]
    expected = torch.zeros(2, 3, 64, 96)
    expected[0, :, :50, :70] = 0.5
    expected[1, :, :64, :40] = 0.25
    torch.testing.assert_close(images, expected)
    assert [t["image_id"] for t in batch["targets"]] == [1, 2]


def test_divisor_one_pads_only_to_the_largest_image():
    batch = collate_detection([item(5, 7, 1.0, 1), item(6, 3, 1.0, 2)], size_divisor=1)
    assert batch["images"].shape == (2, 3, 6, 7)
    assert batch["images"][1, :, :, 3:].abs().sum() == 0 and batch["images"][0, :, 5:].abs().sum() == 0


def test_picklable_collate_fn_for_worker_processes():
    collate = pickle.loads(pickle.dumps(make_collate_fn(16)))
    assert collate([item(17, 20, 1.0, 1)])["images"].shape == (1, 3, 32, 32)


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty batch"):
        collate_detection([])
    with pytest.raises(ValueError, match="size_divisor must be >= 1"):
        collate_detection([item(4, 4, 1.0, 1)], size_divisor=0)
