"""Transforms: aspect-preserving resize and its reported scale, spec parsing, and box/label consistency
over many random augmentations."""
import numpy as np
import pytest

from detkit.data.transforms import build_augmentation, build_transforms, resize_scale


@pytest.mark.parametrize("height, width, min_size, max_size, expected", [
    (480, 640, 800, 1333, 800 / 480),   # shorter side to 800
    (100, 1000, 800, 1333, 1.333),      # longer side capped at 1333
    (128, 128, 128, 128, 1.0),
    (256, 128, 64, 64, 0.25),           # cap wins when min_size == max_size
])
def test_resize_scale(height, width, min_size, max_size, expected):
    assert resize_scale(height, width, min_size, max_size) == pytest.approx(expected)


def test_val_resize_scales_boxes_and_reports_exact_scale():
    transform = build_transforms(False, 50, 1000, [{"type": "HorizontalFlip", "p": 1.0}])  # val ignores augmentations
    image = np.zeros((100, 151, 3), dtype=np.uint8)
    boxes = np.array([[10, 20, 30, 40], [0, 0, 151, 100]], dtype=np.float32)
    out, out_boxes, labels, scale = transform(image, boxes, np.array([4, 2]))
    assert out.shape == (50, 76, 3)  # 151 * 0.5 = 75.5 rounds to 76
    assert scale == (76 / 151, 0.5)
    np.testing.assert_allclose(out_boxes, [[10 * 76 / 151, 10, 30 * 76 / 151, 20], [0, 0, 76, 50]], rtol=1e-6)
    assert labels.tolist() == [4, 2] and labels.dtype == np.int64
    np.testing.assert_allclose(out_boxes / np.array(scale * 2, dtype=np.float32), boxes, rtol=1e-6)  # maps back


def test_no_resize_when_size_already_matches():
    image = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    out, _, _, scale = build_transforms(False, 128, 128)(image, np.zeros((0, 4)), np.zeros(0))
    np.testing.assert_array_equal(out, image)
    assert scale == (1.0, 1.0)


def test_horizontal_flip_hand_computed():
    transform = build_transforms(True, 20, 100, [{"type": "HorizontalFlip", "p": 1.0}])
    image = np.zeros((20, 100, 3), dtype=np.uint8)
    image[:, 0] = 255
    out, boxes, labels, scale = transform(image, np.array([[10, 2, 30, 12]]), np.array([3]))
    np.testing.assert_allclose(boxes, [[70, 2, 90, 12]])
    assert labels.tolist() == [3] and labels.dtype == np.int64 and scale == (1.0, 1.0)
    assert out[:, -1].min() == 255 and out[:, 0].max() == 0


def test_training_images_are_resized_before_the_augmentation_and_the_scale_covers_both():
    # a 400x200 photo for a 50-100 px input: the flip sees the 100x50 image, the boxes follow both steps
    transform = build_transforms(True, 50, 100, [{"type": "HorizontalFlip", "p": 1.0}])
    image = np.zeros((200, 400, 3), dtype=np.uint8)
    image[:, :40] = 255  # the left tenth, on the right after the flip
    out, boxes, labels, scale = transform(image, np.array([[40, 20, 120, 100]]), np.array([1]))
    assert out.shape == (50, 100, 3) and scale == (0.25, 0.25)
    np.testing.assert_allclose(boxes, [[70, 5, 90, 25]])  # x: 100 - 120 / 4 .. 100 - 40 / 4
    assert out[:, 90:].min() == 255 and out[:, :90].max() == 0


def test_boxes_stay_valid_and_aligned_with_labels_over_random_draws():
    """Each box is painted with its own grey level; after random crops/flips/scales the centre of every
    surviving box must still show that box's level, every box lies inside the image with positive size,
    and labels come back int64."""
    augmentations = [
        {"type": "RandomResizedCrop", "size": [96, 96], "scale": [0.2, 1.0], "p": 0.8},
        {"type": "HorizontalFlip", "p": 0.5},
        {"type": "VerticalFlip", "p": 0.5},
        {"type": "RandomScale", "scale_limit": 0.5, "p": 0.5},
    ]
    transform = build_transforms(True, 64, 80, augmentations, seed=0)
    rng = np.random.default_rng(0)
    seen_dropped = seen_kept = 0
    for _ in range(150):
        height, width = (int(v) for v in rng.integers(60, 160, size=2))
        image = np.zeros((height, width, 3), dtype=np.uint8)
        boxes, labels = [], []
        for label in range(int(rng.integers(0, 6))):
            # disjoint vertical bands keep painted regions from overlapping
            band = width // 6
            x1 = label * band + int(rng.integers(0, 3))
            bw = int(rng.integers(8, max(9, band - 2)))
            y1 = int(rng.integers(0, height - 12))
            bh = int(rng.integers(10, height - y1 + 1))
            image[y1:y1 + bh, x1:x1 + bw] = 40 * (label + 1)
            boxes.append([x1, y1, x1 + bw, y1 + bh])
            labels.append(label)
        out, out_boxes, out_labels, _ = transform(image, np.array(boxes, dtype=np.float32).reshape(-1, 4),
                                                  np.array(labels))
        assert out_labels.dtype == np.int64 and out_boxes.dtype == np.float32
        assert len(out_boxes) == len(out_labels) and len(set(out_labels.tolist())) == len(out_labels)
        out_h, out_w = out.shape[:2]
        assert min(out_h, out_w) == 64 or max(out_h, out_w) == 80
        assert (out_boxes[:, 0] >= 0).all() and (out_boxes[:, 1] >= 0).all()
        assert (out_boxes[:, 2] <= out_w).all() and (out_boxes[:, 3] <= out_h).all()
        assert (out_boxes[:, 2] > out_boxes[:, 0]).all() and (out_boxes[:, 3] > out_boxes[:, 1]).all()
        for box, label in zip(out_boxes, out_labels):
            if min(box[2] - box[0], box[3] - box[1]) < 4:
                continue  # too thin for interpolation to leave a clean centre pixel
            cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
            assert abs(int(out[cy, cx, 0]) - 40 * (label + 1)) <= 12
        seen_kept += len(out_labels)
        seen_dropped += len(labels) - len(out_labels)
    assert seen_kept > 100 and seen_dropped > 5  # the draws exercised both keeping and dropping boxes


def test_same_seed_same_augmentation_and_reseed_changes_it():
    specs = [{"type": "RandomResizedCrop", "size": [32, 32], "scale": [0.3, 1.0]}]
    image = np.random.default_rng(1).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    boxes, labels = np.array([[5, 5, 40, 40]], dtype=np.float32), np.array([0])
    first, second = build_transforms(True, 32, 32, specs, seed=3), build_transforms(True, 32, 32, specs, seed=3)
    runs_a = [first(image, boxes, labels)[0] for _ in range(3)]
    runs_b = [second(image, boxes, labels)[0] for _ in range(3)]
    for a, b in zip(runs_a, runs_b):
        np.testing.assert_array_equal(a, b)
    second.reseed(4)
    assert any(not np.array_equal(a, second(image, boxes, labels)[0]) for a in runs_a)


def test_unknown_and_malformed_specs_name_the_problem():
    with pytest.raises(ValueError, match=r"augmentations\[1\]: unknown albumentations transform 'HorizontalFlipp'"):
        build_transforms(True, 64, 64, [{"type": "HorizontalFlip"}, {"type": "HorizontalFlipp"}])
    with pytest.raises(ValueError, match=r"augmentations\[0\]: each augmentation must be a dict with a 'type'"):
        build_transforms(True, 64, 64, ["HorizontalFlip"])
    with pytest.raises(ValueError,
                       match=r"augmentations\[0\]: cannot build HorizontalFlip.*'probability' are not valid"):
        build_transforms(True, 64, 64, [{"type": "HorizontalFlip", "probability": 0.5}])
    with pytest.raises(ValueError, match="unknown albumentations transform .to_tensor."):
        build_augmentation({"type": "to_tensor"})


def test_nested_container_spec():
    one_of = build_augmentation({"type": "OneOf", "transforms": [{"type": "HorizontalFlip"}, {"type": "VerticalFlip"}],
                                 "p": 1.0})
    assert [type(t).__name__ for t in one_of.transforms] == ["HorizontalFlip", "VerticalFlip"]


def test_augmentation_strength_scales_all_but_the_flips_and_keeps_the_configured_p():
    specs = [{"type": "HorizontalFlip", "p": 0.5}, {"type": "RandomRotate90", "p": 1.0},
             {"type": "Affine", "scale": [0.8, 1.2], "p": 0.6}, {"type": "ColorJitter", "p": 0.8}]
    transform = build_transforms(True, 64, 64, specs)
    probabilities = lambda: [step.p for step in transform.augment.transforms]  # noqa: E731
    transform.set_strength(0.5)
    assert probabilities() == pytest.approx([0.5, 1.0, 0.3, 0.4])
    transform.set_strength(0.0)  # flips only: the image's colours are never changed
    assert probabilities() == pytest.approx([0.5, 1.0, 0.0, 0.0])
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    for _ in range(20):
        out, *_ = transform(image, np.zeros((0, 4)), np.zeros(0))
        assert sorted(out.reshape(-1).tolist()) == sorted(image.reshape(-1).tolist())  # a permutation of the pixels
    transform.set_strength(1.0)  # back to the configured p, not a product of the earlier strengths
    assert probabilities() == pytest.approx([0.5, 1.0, 0.6, 0.8])
    with pytest.raises(ValueError, match="strength"):
        transform.set_strength(1.5)
