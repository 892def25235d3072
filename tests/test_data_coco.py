"""CocoDetection on tiny datasets written into tmp_path: targets, crowd/empty images, every bad-input case,
and image decoding (greyscale, RGBA, palette, EXIF rotation)."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from detkit.data.coco import BadImageError, CocoDetection, load_rgb_image
from detkit.data.transforms import build_transforms

CATEGORIES = [{"id": 7, "name": "cat"}, {"id": 3, "name": "dog"}]  # sparse, unsorted: dog -> 0, cat -> 1


def pixels(height, width, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def write_dataset(root, images, annotations, categories=CATEGORIES, extra=None):
    """images: list of (id, file_name, height, width); writes random RGB PNGs and the JSON; returns paths."""
    (root / "images").mkdir(exist_ok=True)
    entries = []
    for image_id, file_name, height, width in images:
        Image.fromarray(pixels(height, width, image_id)).save(root / "images" / file_name)
        entries.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    data = {"images": entries, "annotations": annotations, "categories": categories, **(extra or {})}
    path = root / "instances.json"
    path.write_text(json.dumps(data))
    return str(root / "images"), str(path)


def ann(ann_id, image_id, category_id, bbox, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox,
            "area": bbox[2] * bbox[3] if all(map(math.isfinite, bbox)) else 0, "iscrowd": iscrowd}


@pytest.fixture
def basic(tmp_path):
    images = [(1, "a.png", 20, 30), (2, "b.png", 16, 16), (5, "c.png", 10, 12)]
    annotations = [
        ann(1, 1, 7, [2, 3, 10, 5]),
        ann(2, 1, 3, [0, 0, 30, 20]),
        ann(3, 1, 7, [5, 5, 4, 4], iscrowd=1),
        ann(4, 5, 3, [1.5, 2.25, 3.5, 4.75]),
    ]  # image 2 has no annotations
    return write_dataset(tmp_path, images, annotations)


def test_item_targets(basic):
    dataset = CocoDetection(*basic)
    assert len(dataset) == 3 and dataset.image_ids == [1, 2, 5]
    assert dataset.categories.category_ids == [3, 7] and dataset.categories.class_names == ["dog", "cat"]
    image, target = dataset[0]
    assert image.shape == (3, 20, 30) and image.dtype == torch.float32
    torch.testing.assert_close(image, torch.from_numpy(pixels(20, 30, 1)).permute(2, 0, 1).float() / 255)
    # xywh -> xyxy, crowd annotation 3 left out, category 7 -> label 1, 3 -> label 0
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3.0, 12.0, 8.0], [0.0, 0.0, 30.0, 20.0]]))
    assert target["labels"].tolist() == [1, 0] and target["labels"].dtype == torch.int64
    assert target["image_id"] == 1 and target["orig_size"] == (20, 30)
    torch.testing.assert_close(target["scale"], torch.tensor([1.0, 1.0]))
    _, target = dataset[2]
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.5, 2.25, 5.0, 7.0]]))


def test_crowd_stays_in_ground_truth(basic):
    dataset = CocoDetection(*basic)
    assert dataset.coco.getAnnIds(imgIds=[1], iscrowd=None) == [1, 2, 3]
    assert [a["id"] for a in dataset.coco.loadAnns(dataset.coco.getAnnIds(iscrowd=True))] == [3]


def test_empty_images_kept_by_default_and_dropped_on_request(basic):
    dataset = CocoDetection(*basic)
    _, target = dataset[1]
    assert target["image_id"] == 2 and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    dropped = CocoDetection(*basic, drop_empty=True)
    assert dropped.image_ids == [1, 5]
    assert sorted(dropped.coco.getImgIds()) == [1, 5]


def test_image_with_only_crowd_counts_as_empty(tmp_path):
    paths = write_dataset(tmp_path, [(1, "a.png", 8, 8), (2, "b.png", 8, 8)],
                          [ann(1, 1, 3, [0, 0, 4, 4], iscrowd=1), ann(2, 2, 3, [0, 0, 4, 4])])
    assert CocoDetection(*paths, drop_empty=True).image_ids == [2]


def test_transforms_resize_and_scale(basic):
    dataset = CocoDetection(*basic, transforms=build_transforms(False, 40, 100))
    image, target = dataset[0]  # 20x30 -> 40x60
    assert image.shape == (3, 40, 60)
    torch.testing.assert_close(target["scale"], torch.tensor([2.0, 2.0]))
    torch.testing.assert_close(target["boxes"], torch.tensor([[4.0, 6.0, 24.0, 16.0], [0.0, 0.0, 60.0, 40.0]]))
    assert target["orig_size"] == (20, 30)


def test_cache_gives_identical_items(basic):
    plain, cached = CocoDetection(*basic), CocoDetection(*basic, cache_images=True)
    for index in range(3):
        torch.testing.assert_close(plain[index][0], cached[index][0])
        torch.testing.assert_close(plain[index][1]["boxes"], cached[index][1]["boxes"])


@pytest.mark.parametrize("train", [False, True])
def test_a_cache_of_shrunk_images_gives_the_items_of_the_originals(basic, train):
    # 20x30 and 16x16 shrink to 12-16 px: the cache keeps them shrunk; 10x12 would grow: kept as decoded
    augmentations = [{"type": "HorizontalFlip", "p": 1.0}] if train else None
    make = lambda cache: CocoDetection(*basic, cache_images=cache,  # noqa: E731
                                       transforms=build_transforms(train, 12, 16, augmentations))
    plain, cached = make(False), make(True)
    assert cached._cache[0][0].shape == (11, 16, 3) and cached._cache[2][1] == (1.0, 1.0)
    for index in range(3):
        (image, target), (cached_image, cached_target) = plain[index], cached[index]
        torch.testing.assert_close(image, cached_image)
        for key in ("boxes", "scale"):
            torch.testing.assert_close(target[key], cached_target[key])
        assert target["orig_size"] == cached_target["orig_size"]
    assert cached.load_image(0).shape == (20, 30, 3)  # pictures draw on the original


def test_bad_boxes_are_clipped_or_dropped_and_reported_once(tmp_path):
    nan, inf = float("nan"), float("inf")
    annotations = [
        ann(1, 1, 3, [2, 2, 5, 5]),        # fine
        ann(2, 1, 3, [nan, 1, 2, 2]),      # dropped: NaN
        ann(3, 1, 7, [1, 1, inf, 2]),      # dropped: inf
        ann(4, 1, 3, [1, 1, 0, 3]),        # dropped: zero width
        ann(5, 1, 3, [1, 1, 3, -2]),       # dropped: negative height
        ann(6, 1, 7, [-3, 4, 6, 20]),      # clipped to [0, 4, 3, 10]
        ann(7, 1, 3, [12, 1, 5, 2]),       # dropped: entirely right of the 10 px wide image
        ann(8, 1, 7, [8, 8, 2.005, 2]),    # 0.005 px over the border: clipped silently
    ]
    paths = write_dataset(tmp_path, [(1, "a.png", 10, 10)], annotations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(*paths)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "6 of 8 boxes needed fixing" in message
    assert "1 clipped to the image" in message and "2 dropped: NaN/inf" in message
    assert "2 dropped: zero or negative width/height" in message and "1 dropped: outside the image" in message
    assert "annotation 2 in image id 1 (a.png, 10x10)" in message
    _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 2.0, 7.0, 7.0], [0.0, 4.0, 3.0, 10.0],
                                                              [8.0, 8.0, 10.0, 10.0]]))
    assert target["labels"].tolist() == [0, 1, 1]
    assert len(dataset.coco.getAnnIds()) == 8  # the ground truth is not rewritten


def test_missing_image_error_names_file_and_id(basic, tmp_path):
    (tmp_path / "images" / "b.png").unlink()
    with pytest.raises(BadImageError, match=r"b.png \(image id 2\)"):
        CocoDetection(*basic)


def test_missing_image_skipped_with_one_counted_warning(basic, tmp_path):
    (tmp_path / "images" / "b.png").unlink()
    (tmp_path / "images" / "c.png").unlink()
    with pytest.warns(UserWarning, match=r"skipped 2 of 3 images.*b.png \(image id 2\).*c.png \(image id 5\)"):
        dataset = CocoDetection(*basic, skip_bad_images=True)
    assert dataset.image_ids == [1]
    assert dataset.coco.getImgIds() == [1] and dataset.coco.getAnnIds() == [1, 2, 3]


def test_unreadable_image_error_on_load(basic, tmp_path):
    (tmp_path / "images" / "b.png").write_bytes(b"not an image")
    dataset = CocoDetection(*basic)
    with pytest.raises(BadImageError, match=r"cannot read image .*b.png \(image id 2\)"):
        dataset[1]


def test_unreadable_image_skipped_on_load_uses_next(basic, tmp_path):
    (tmp_path / "images" / "b.png").write_bytes(b"not an image")
    dataset = CocoDetection(*basic, skip_bad_images=True)
    with pytest.warns(UserWarning, match=r"b.png \(image id 2\).*using the next image instead \(1 skipped"):
        _, target = dataset[1]
    assert target["image_id"] == 5 and dataset.skipped_on_load == 1


def test_unreadable_image_skipped_at_construction_when_caching(basic, tmp_path):
    (tmp_path / "images" / "b.png").write_bytes(b"not an image")
    with pytest.warns(UserWarning, match=r"skipped 1 of 3 images"):
        dataset = CocoDetection(*basic, skip_bad_images=True, cache_images=True)
    assert dataset.image_ids == [1, 5]
    with pytest.raises(BadImageError, match=r"b.png \(image id 2\)"):
        CocoDetection(*basic, cache_images=True)


def test_image_size_mismatch_is_a_bad_image(tmp_path):
    images_dir, json_path = write_dataset(tmp_path, [(1, "a.png", 10, 12)], [])
    data = json.loads(open(json_path).read())
    data["images"][0]["width"] = 13
    open(json_path, "w").write(json.dumps(data))
    with pytest.raises(BadImageError, match=r"a.png \(image id 1\) decodes to 12x10 .* JSON says 13x10"):
        CocoDetection(images_dir, json_path)[0]


def test_unknown_category_error(tmp_path):
    paths = write_dataset(tmp_path, [(4, "a.png", 8, 8)], [ann(11, 4, 5, [0, 0, 2, 2])])
    with pytest.raises(ValueError, match=r"annotation id 11 .* image id 4 \(a.png\) has category id 5, which is not "
                                         r"in 'categories' \[3, 7\]"):
        CocoDetection(*paths)


def test_duplicated_image_id_error(tmp_path):
    paths = write_dataset(tmp_path, [(4, "a.png", 8, 8), (4, "b.png", 8, 8)], [])
    with pytest.raises(ValueError, match=r"image id 4 is duplicated \(a.png and b.png\)"):
        CocoDetection(*paths)


def test_annotation_of_unknown_image_error(tmp_path):
    paths = write_dataset(tmp_path, [(4, "a.png", 8, 8)], [ann(1, 9, 3, [0, 0, 2, 2])])
    with pytest.raises(ValueError, match=r"annotation id 1 .* refers to image id 9, which is not in 'images'"):
        CocoDetection(*paths)


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key_error(tmp_path, key):
    data = {"images": [], "annotations": [], "categories": CATEGORIES}
    del data[key]
    path = tmp_path / "x.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"x.json: missing top-level key\(s\) \['{key}'\]"):
        CocoDetection(str(tmp_path), str(path))


def test_unparsable_and_missing_json(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="x.json: not valid JSON"):
        CocoDetection(str(tmp_path), str(path))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        CocoDetection(str(tmp_path), str(tmp_path / "nope.json"))


@pytest.mark.parametrize("broken, message", [
    ({"bbox": [1, 2, 3]}, r"annotation id 1 .* has bbox \[1, 2, 3\]"),
    ({"bbox": None}, r"annotation id 1 .* has bbox None"),
    ({"category_id": None}, "category id None"),
])
def test_malformed_annotation_fields(tmp_path, broken, message):
    paths = write_dataset(tmp_path, [(1, "a.png", 8, 8)], [{**ann(1, 1, 3, [0, 0, 2, 2]), **broken}])
    with pytest.raises(ValueError, match=message):
        CocoDetection(*paths)


def test_image_entry_without_size_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"images": [{"id": 3, "file_name": "a.png"}], "annotations": [],
                                "categories": CATEGORIES}))
    with pytest.raises(ValueError, match=r"images\[0\] \(id 3\) lacks \['width', 'height'\]"):
        CocoDetection(str(tmp_path), str(path))


def test_bad_annotation_ids_renumbered_and_missing_fields_filled(tmp_path):
    annotations = [{"id": 0, "image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 3]},
                   {"id": 0, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 4], "iscrowd": 0, "area": 5}]
    paths = write_dataset(tmp_path, [(1, "a.png", 8, 8)], annotations)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = CocoDetection(*paths)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 annotation(s) had no 'area'" in messages and "1 annotation(s) had no 'iscrowd'" in messages
    assert "renumbered 1..2" in messages
    anns = dataset.coco.loadAnns(dataset.coco.getAnnIds())
    assert [(a["id"], a["area"], a["iscrowd"]) for a in anns] == [(1, 6.0, 0), (2, 5, 0)]


# -- decoding ---------------------------------------------------------------------------------------------

def test_greyscale_rgba_palette_load_as_rgb(tmp_path):
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_rgb_image(str(tmp_path / "grey.png")), np.stack([grey] * 3, axis=-1))

    rgba = pixels(3, 4, 0)
    alpha = np.full((3, 4, 1), 7, dtype=np.uint8)
    Image.fromarray(np.concatenate([rgba, alpha], axis=-1), mode="RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(load_rgb_image(str(tmp_path / "rgba.png")), rgba)

    palette_image = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    palette_image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    palette_image.save(tmp_path / "palette.png")
    expected = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 255, 0]]], dtype=np.uint8)
    np.testing.assert_array_equal(load_rgb_image(str(tmp_path / "palette.png")), expected)

    palette_image.info["transparency"] = 1
    palette_image.save(tmp_path / "palette_alpha.png", transparency=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL warning about transparent palettes
        np.testing.assert_array_equal(load_rgb_image(str(tmp_path / "palette_alpha.png")), expected)


def test_exif_rotated_image_is_turned_upright(tmp_path):
    stored = pixels(2, 4, 1)  # 4 wide, 2 high as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: display rotated 90 degrees clockwise
    Image.fromarray(stored).save(tmp_path / "rotated.png", exif=exif)
    loaded = load_rgb_image(str(tmp_path / "rotated.png"))
    np.testing.assert_array_equal(loaded, np.rot90(stored, k=-1))
    assert loaded.shape == (4, 2, 3)
