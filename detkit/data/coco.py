"""A COCO "instances" dataset (an image folder + a JSON) read with pycocotools, with checked input.

Labels follow ``detkit.data.categories`` (0..K-1 for object classes, no background label).
Bad input never surfaces as a bare IndexError/KeyError:

- malformed JSON (no ``images``/``annotations``/``categories``, a field missing), a duplicated image id,
  an annotation whose image or category is unknown: ValueError naming the file and the offending entry;
- a missing, unreadable or wrongly sized image: ``BadImageError`` naming the file and the image id, or,
  with ``skip_bad_images``, one warning with the count and a few examples and the image left out;
- a box with NaN/inf or zero/negative width/height is dropped, one reaching outside the image is clipped
  (dropped if nothing is left): counted and reported in one warning with a few examples;
- annotation ids that are missing, non-positive or duplicated are renumbered 1..A (COCOeval treats
  id 0 as "unmatched" and keys annotations by id), missing ``area``/``iscrowd`` are filled (w*h, 0):
  one warning each.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections import Counter

import numpy as np
import torch
from PIL import Image, ImageOps
from pycocotools.coco import COCO

from detkit.data.categories import CategoryMapping

MAX_EXAMPLES = 5
# Overshoot past the image border (px) tolerated silently: float noise from converters, not a bad box.
BORDER_TOLERANCE = 0.01

BOX_OK, BOX_CLIPPED, BOX_NOT_FINITE, BOX_NOT_POSITIVE, BOX_OUTSIDE = range(5)
BOX_STATUS_TEXT = {
    BOX_CLIPPED: "clipped to the image",
    BOX_NOT_FINITE: "dropped: NaN/inf coordinates",
    BOX_NOT_POSITIVE: "dropped: zero or negative width/height",
    BOX_OUTSIDE: "dropped: outside the image",
}


class BadImageError(ValueError):
    """An image file is missing, cannot be decoded, or does not have the size its JSON entry states."""


def load_rgb_image(path: str) -> np.ndarray:
    """Decode an image file as (H, W, 3) uint8 RGB, applying its EXIF orientation (see ``rgb_array``)."""
    with Image.open(path) as image:
        return rgb_array(image)


def rgb_array(image: Image.Image) -> np.ndarray:
    """A PIL image as (H, W, 3) uint8 RGB, applying its EXIF orientation.

    Greyscale, palette (with or without transparency), RGBA and CMYK all come out as RGB; alpha is dropped.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # PIL warns when a transparent palette goes straight to RGB
    return np.asarray(image.convert("RGB"))


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB, or float32 already in [0, 1] (the torchvision resize's output) -> (3, H, W) float32
    in [0, 1], the models' input (they normalise themselves)."""
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
    return tensor if image.dtype == np.float32 else tensor.div_(255.0)


def read_coco_json(path: str) -> dict:
    """Load a COCO instances JSON and check its top level; ValueError naming the file and what is missing."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON: {error}") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with 'images', 'annotations' and 'categories'")
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"{path}: missing top-level key(s) {missing}; a COCO instances file has "
                         f"'images', 'annotations' and 'categories'")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data[key], list):
            raise ValueError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data


def check_images(images: list, source: str) -> None:
    """Every image entry has an int ``id``, a ``file_name`` and positive ``width``/``height``; ids are unique."""
    file_of_id: dict[int, str] = {}
    for index, image in enumerate(images):
        if not isinstance(image, dict):
            raise ValueError(f"{source}: images[{index}] must be an object, got {image!r}")
        missing = [key for key in ("id", "file_name", "width", "height") if key not in image]
        if missing:
            raise ValueError(f"{source}: images[{index}] (id {image.get('id')}) lacks {missing}")
        if not _is_int(image["id"]):
            raise ValueError(f"{source}: images[{index}] has a non-integer id {image['id']!r}")
        if not (_is_int(image["width"]) and _is_int(image["height"]) and image["width"] > 0 and image["height"] > 0):
            raise ValueError(f"{source}: image id {image['id']} ({image['file_name']}) has invalid size "
                             f"width={image['width']!r} height={image['height']!r}")
        if image["id"] in file_of_id:
            raise ValueError(f"{source}: image id {image['id']} is duplicated "
                             f"({file_of_id[image['id']]} and {image['file_name']})")
        file_of_id[image["id"]] = image["file_name"]


def check_annotations(annotations: list, images: list, categories: CategoryMapping, source: str) -> list[str]:
    """Check references and fields; fill ``area``/``iscrowd`` and renumber bad ids in place.

    Returns the warnings to report (one line per kind of fix).
    """
    file_of_id = {image["id"]: image["file_name"] for image in images}
    known_categories = set(categories.category_ids)
    filled_area = filled_crowd = 0
    for index, ann in enumerate(annotations):
        if not isinstance(ann, dict):
            raise ValueError(f"{source}: annotations[{index}] must be an object, got {ann!r}")
        where = f"{source}: annotation id {ann.get('id')} (annotations[{index}])"
        missing = [key for key in ("image_id", "category_id", "bbox") if key not in ann]
        if missing:
            raise ValueError(f"{where} lacks {missing}")
        if ann["image_id"] not in file_of_id:
            raise ValueError(f"{where} refers to image id {ann['image_id']}, which is not in 'images'")
        if ann["category_id"] not in known_categories:
            raise ValueError(f"{where} in image id {ann['image_id']} ({file_of_id[ann['image_id']]}) has "
                             f"category id {ann['category_id']!r}, which is not in 'categories' "
                             f"{categories.category_ids}")
        bbox = ann["bbox"]
        if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise ValueError(f"{where} in image id {ann['image_id']} has bbox {bbox!r}; expected [x, y, w, h] numbers")
        if "area" not in ann:
            ann["area"] = float(bbox[2]) * float(bbox[3])
            filled_area += 1
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            filled_crowd += 1
    notes = []
    if filled_area:
        notes.append(f"{filled_area} annotation(s) had no 'area'; set to bbox w*h")
    if filled_crowd:
        notes.append(f"{filled_crowd} annotation(s) had no 'iscrowd'; set to 0")
    ids = [ann.get("id") for ann in annotations]
    if any(not _is_int(i) or i <= 0 for i in ids) or len(set(ids)) != len(ids):
        bad = [i for i, n in Counter(ids).items() if n > 1 or not _is_int(i) or i <= 0][:MAX_EXAMPLES]
        for new_id, ann in enumerate(annotations, start=1):
            ann["id"] = new_id
        notes.append(f"annotation ids were missing, non-positive or duplicated (e.g. {bad}); renumbered 1..{len(ids)}")
    return notes


def clean_boxes(xywh: np.ndarray, image_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Convert COCO boxes to xyxy and clip them to their image.

    Args:
        xywh: (A, 4) float64 COCO boxes [x, y, w, h] in pixels.
        image_sizes: (A, 2) float64 (width, height) of each box's image.
    Returns:
        xyxy (A, 4) float32 clipped boxes, and status (A,) int64: BOX_OK, BOX_CLIPPED (kept) or a reason to
        drop (BOX_NOT_FINITE, BOX_NOT_POSITIVE, BOX_OUTSIDE).
    """
    x1, y1, w, h = xywh.T
    xyxy = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    limits = np.concatenate([image_sizes, image_sizes], axis=1)  # (A, 4) w, h, w, h
    with np.errstate(invalid="ignore"):
        clipped = np.clip(xyxy, 0.0, limits)
        finite = np.isfinite(xyxy).all(axis=1)
        positive = (w > 0) & (h > 0)
        moved = (np.abs(clipped - xyxy) > BORDER_TOLERANCE).any(axis=1)
        nonempty = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    status = np.full(len(xywh), BOX_OK, dtype=np.int64)
    status[moved] = BOX_CLIPPED
    status[~nonempty] = BOX_OUTSIDE
    status[~positive] = BOX_NOT_POSITIVE
    status[~finite] = BOX_NOT_FINITE
    return clipped.astype(np.float32), status


def describe_box_problems(status: np.ndarray, annotations: list, images_by_id: dict, source: str) -> str | None:
    """One message counting the clipped/dropped boxes by reason, with a few examples; None if all are fine."""
    bad = np.flatnonzero(status != BOX_OK)
    if len(bad) == 0:
        return None
    counts = Counter(status[bad].tolist())
    summary = ", ".join(f"{counts[code]} {BOX_STATUS_TEXT[code]}" for code in sorted(counts))
    examples = []
    for index in bad[:MAX_EXAMPLES]:
        ann = annotations[index]
        image = images_by_id[ann["image_id"]]
        examples.append(f"annotation {ann['id']} in image id {ann['image_id']} ({image['file_name']}, "
                        f"{image['width']}x{image['height']}): bbox {ann['bbox']} {BOX_STATUS_TEXT[status[index]]}")
    return (f"{source}: {len(bad)} of {len(status)} boxes needed fixing ({summary}). "
            f"Examples: " + "; ".join(examples))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coco_from_dict(data: dict) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints "creating index..."
        coco.createIndex()
    return coco


class CocoDetection(torch.utils.data.Dataset):
    """A COCO instances dataset: ``dataset[i]`` -> ``(image, target)``.

    Args:
        image_dir: folder that ``file_name`` entries are relative to.
        annotation_file: the COCO instances JSON.
        transforms: a ``detkit.data.transforms.DetectionTransform`` (or any callable with its signature);
            None feeds the original image (scale 1).
        drop_empty: leave out images with no training targets (after dropping crowd and bad boxes).
        skip_bad_images: leave out missing, unreadable or wrongly sized images with a warning instead of
            raising ``BadImageError``.
        cache_images: decode every image once at construction and keep the (H, W, 3) uint8 arrays in memory, shrunk
            to the size ``transforms`` resizes them to when it has a ``shrink`` (``DetectionTransform``): a
            2048 px photo is then not resized again at every step.

    Item:
        image: (3, H, W) float32 in [0, 1], RGB, after ``transforms``.
        target: ``boxes`` (N, 4) float32 xyxy pixels of the returned image, ``labels`` (N,) int64 in 0..K-1,
        ``image_id`` int (the COCO id), ``orig_size`` (h, w) ints of the decoded original image,
        ``scale`` (2,) float32 (sx, sy) with returned = original * scale.

    Attributes:
        coco: pycocotools ``COCO`` of the JSON (as fixed above), restricted to the images of this dataset,
            with crowd annotations kept: the ground truth for evaluation.
        categories: ``CategoryMapping`` (label <-> category id, class names).
        image_ids: the COCO image ids in dataset order.
    """

    def __init__(self, image_dir: str, annotation_file: str, transforms=None, drop_empty: bool = False,
                 skip_bad_images: bool = False, cache_images: bool = False):
        self.image_dir = image_dir
        self.annotation_file = annotation_file
        self.transforms = transforms
        self.skip_bad_images = skip_bad_images
        self.skipped_on_load = 0  # images skipped in __getitem__ in this process
        source = annotation_file
        data = read_coco_json(annotation_file)
        check_images(data["images"], source)
        self.categories = CategoryMapping(data["categories"], source)
        for note in check_annotations(data["annotations"], data["images"], self.categories, source):
            warnings.warn(f"{source}: {note}", stacklevel=2)
        boxes, labels = self._training_targets(data, source)

        images = data["images"]
        keep, cache = self._check_files(images, cache_images)
        if drop_empty:
            keep = [i for i in keep if len(labels[i])]
        self._images = [images[i] for i in keep]
        self._boxes = [boxes[i] for i in keep]
        self._labels = [labels[i] for i in keep]
        self._cache = [cache[i] for i in keep] if cache_images else None
        self.image_ids = [image["id"] for image in self._images]
        if len(keep) != len(images):
            kept_ids = set(self.image_ids)
            data = {**data, "images": self._images,
                    "annotations": [a for a in data["annotations"] if a["image_id"] in kept_ids]}
        self.coco = _coco_from_dict(data)

    def _training_targets(self, data: dict, source: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per image (JSON order): xyxy float32 (N, 4) boxes and int64 (N,) labels, crowd and bad boxes removed."""
        images, annotations = data["images"], data["annotations"]
        index_of_id = {image["id"]: i for i, image in enumerate(images)}
        count = len(annotations)
        xywh = np.array([ann["bbox"] for ann in annotations], dtype=np.float64).reshape(count, 4)
        image_index = np.array([index_of_id[ann["image_id"]] for ann in annotations], dtype=np.int64)
        labels = np.array([self.categories.category_id_to_label(ann["category_id"]) for ann in annotations],
                          dtype=np.int64)
        crowd = np.array([bool(ann["iscrowd"]) for ann in annotations], dtype=bool)
        sizes = np.array([[images[i]["width"], images[i]["height"]] for i in image_index],
                         dtype=np.float64).reshape(count, 2)
        xyxy, status = clean_boxes(xywh, sizes)
        # Crowd regions are not targets whatever their box; only report boxes we would have trained on.
        status[crowd] = BOX_OK
        message = describe_box_problems(status, annotations, {im["id"]: im for im in images}, source)
        if message:
            warnings.warn(message, stacklevel=3)
        usable = ~crowd & ((status == BOX_OK) | (status == BOX_CLIPPED))
        order = np.argsort(image_index[usable], kind="stable")
        grouped_boxes, grouped_labels = xyxy[usable][order], labels[usable][order]
        bounds = np.searchsorted(image_index[usable][order], np.arange(len(images) + 1))
        return ([grouped_boxes[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
                [grouped_labels[a:b] for a, b in zip(bounds[:-1], bounds[1:])])

    def _check_files(self, images: list, cache_images: bool) -> tuple[list[int], list[tuple | None]]:
        """Indices of the usable images (all, unless skipping bad ones) and, per image, if caching, its decoded
        array (shrunk, see ``cache_images``) and the (sx, sy) factor of that shrink."""
        keep, cache, problems = [], [None] * len(images), []
        for index, image in enumerate(images):
            decoded = None
            try:
                if cache_images:
                    decoded = self._decode(image)
                    shrink = getattr(self.transforms, "shrink", None)
                    decoded = shrink(decoded) if shrink is not None else (decoded, (1.0, 1.0))
                elif not os.path.isfile(self._path(image)):
                    raise BadImageError(f"image file not found: {self._path(image)} (image id {image['id']})")
            except BadImageError as error:
                if not self.skip_bad_images:
                    raise
                problems.append(str(error))
                continue
            keep.append(index)
            cache[index] = decoded
        if problems:
            warnings.warn(f"{self.annotation_file}: skipped {len(problems)} of {len(images)} images "
                          f"(skip_bad_images=True): " + "; ".join(problems[:MAX_EXAMPLES]), stacklevel=3)
        return keep, cache

    def _path(self, image: dict) -> str:
        return os.path.join(self.image_dir, image["file_name"])

    def _decode(self, image: dict) -> np.ndarray:
        """(H, W, 3) uint8 RGB of one image entry; BadImageError naming the file and id on any problem."""
        path = self._path(image)
        if not os.path.isfile(path):
            raise BadImageError(f"image file not found: {path} (image id {image['id']})")
        try:
            array = load_rgb_image(path)
        except Exception as error:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
            raise BadImageError(f"cannot read image {path} (image id {image['id']}): {error}") from error
        if array.shape[:2] != (image["height"], image["width"]):
            raise BadImageError(
                f"image {path} (image id {image['id']}) decodes to {array.shape[1]}x{array.shape[0]} (w x h, after "
                f"EXIF orientation) but the JSON says {image['width']}x{image['height']}")
        return array

    def __len__(self) -> int:
        return len(self._images)

    def original_targets(self) -> list[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
        """Per item, without decoding any image: the original (h, w) from the JSON, the training boxes (N, 4)
        float32 xyxy original pixels and labels (N,) int64 (crowd and unusable boxes left out)."""
        return [((int(image["height"]), int(image["width"])), boxes, labels)
                for image, boxes, labels in zip(self._images, self._boxes, self._labels)]

    def load_image(self, index: int) -> np.ndarray:
        """The original (H, W, 3) uint8 RGB image of item ``index`` (from the cache if it holds it unshrunk)."""
        if self._cache is not None and self._cache[index][1] == (1.0, 1.0):
            return self._cache[index][0]
        return self._decode(self._images[index])

    def _input_image(self, index: int) -> tuple[np.ndarray, tuple[float, float]]:
        """The image ``__getitem__`` transforms: the cached one (maybe shrunk) or the decoded original, with the
        (sx, sy) factor from the original."""
        if self._cache is not None:
            return self._cache[index]
        return self._decode(self._images[index]), (1.0, 1.0)

    def __getitem__(self, index: int):
        # With skip_bad_images, an image that fails to decode here is replaced by the next one.
        for offset in range(len(self)):
            position = (index + offset) % len(self)
            try:
                image, shrunk = self._input_image(position)
                break
            except BadImageError as error:
                if not self.skip_bad_images:
                    raise
                self.skipped_on_load += 1
                warnings.warn(f"{error}; using the next image instead ({self.skipped_on_load} skipped "
                              f"while loading in this process)", stacklevel=2)
        else:
            raise BadImageError(f"{self.annotation_file}: no image of the dataset could be read")
        return self._item(position, image, shrunk)

    def _item(self, index: int, image: np.ndarray, shrunk: tuple[float, float] = (1.0, 1.0)):
        boxes, labels = self._boxes[index], self._labels[index]
        entry = self._images[index]
        orig_size = (int(entry["height"]), int(entry["width"]))  # the decode checked them against the file
        boxes = boxes * np.array([shrunk[0], shrunk[1]] * 2, dtype=np.float32)
        scale = shrunk
        if self.transforms is not None:
            image, boxes, labels, step = self.transforms(image, boxes, labels)
            scale = (shrunk[0] * step[0], shrunk[1] * step[1])
        tensor = image_to_tensor(image)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64).reshape(-1),
            "image_id": int(self.image_ids[index]),
            "orig_size": orig_size,
            "scale": torch.tensor(scale, dtype=torch.float32),
        }
        return tensor, target
