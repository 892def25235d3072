"""The built-in dataset: circles, rectangles and triangles on textured, noisy backgrounds (COCO format).

``generate_shapes(out_dir)`` writes ``images/{train,val}_NNNNNN.png``, ``instances_train.json`` and
``instances_val.json``. Every image is drawn from its own random streams seeded by (seed, split, index),
so the output does not depend on generation order or process count. The geometry (and so the JSON) uses
only integer draws and exact float arithmetic on dyadic numbers: the same seed gives the same JSON bytes.

Scenes: 0-8 objects, sizes uniform over 8-64 px, fully inside the image; later objects occlude
earlier ones, but every object keeps at least half of its pixels visible and no two visible boxes
overlap with IoU >= 0.5. Boxes are the tight bounds of each object's visible pixels; ``area`` is the
visible pixel count. Colours keep a clear distance from the background and from overlapping objects.
"""
from __future__ import annotations

import functools
import math
import multiprocessing
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from detkit.atomic_io import write_json_atomically

SHAPES_CATEGORIES = [
    {"id": 1, "name": "circle", "supercategory": "shape"},
    {"id": 2, "name": "rectangle", "supercategory": "shape"},
    {"id": 3, "name": "triangle", "supercategory": "shape"},
]
CATEGORY_ID = {c["name"]: c["id"] for c in SHAPES_CATEGORIES}
SPLITS = {"train": 0, "val": 1}

MAX_OBJECTS = 8
MIN_SIZE, MAX_SIZE = 8, 64
MIN_VISIBLE_FRACTION = 0.5
MAX_BOX_IOU = 0.5
PLACEMENT_TRIES = 20
MIN_BACKGROUND_DISTANCE = 110.0  # RGB Euclidean distance of an object colour from the background base
MIN_NEIGHBOUR_DISTANCE = 80.0    # ... and from the colour of any object whose box it touches
TEXTURE_STD, NOISE_STD = 14.0, 5.0
# Triangle vertices use cos/sin of whole degrees as integers (x 2^20) so that no libm difference between
# machines can move a rounded vertex.
UNIT = 2**20
UNIT_COS = [round(math.cos(math.radians(a)) * UNIT) for a in range(360)]
UNIT_SIN = [round(math.sin(math.radians(a)) * UNIT) for a in range(360)]


@dataclass(frozen=True)
class Shape:
    """One object. ``kind`` is "circle", "rectangle" or "triangle"; ``params`` are integers:
    circle (x0, y0, diameter), rectangle (x0, y0, width, height), triangle (x1, y1, x2, y2, x3, y3)."""

    kind: str
    params: tuple[int, ...]


@functools.lru_cache(maxsize=4)
def _pixel_centres(image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(S, 1) y and (1, S) x pixel-centre coordinates (k + 0.5; exact in float64), broadcast by callers."""
    centres = np.arange(image_size, dtype=np.float64) + 0.5
    return centres[:, None], centres[None, :]


def rasterize(shape: Shape, image_size: int) -> np.ndarray:
    """(S, S) bool mask of the pixels whose centres lie inside ``shape`` (edges included)."""
    ys, xs = _pixel_centres(image_size)
    if shape.kind == "circle":
        x0, y0, diameter = shape.params
        radius = diameter / 2
        return (xs - x0 - radius) ** 2 + (ys - y0 - radius) ** 2 <= radius**2
    if shape.kind == "rectangle":
        x0, y0, width, height = shape.params
        return (xs >= x0) & (xs <= x0 + width) & (ys >= y0) & (ys <= y0 + height)
    if shape.kind == "triangle":
        ax, ay, bx, by, cx, cy = shape.params
        if (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) < 0:  # orient counter-clockwise in image axes
            bx, by, cx, cy = cx, cy, bx, by
        inside = np.ones((image_size, image_size), dtype=bool)  # broadcasting needs the full shape once
        for (px, py), (qx, qy) in (((ax, ay), (bx, by)), ((bx, by), (cx, cy)), ((cx, cy), (ax, ay))):
            inside &= (qx - px) * (ys - py) - (qy - py) * (xs - px) >= 0
        return inside
    raise ValueError(f"unknown shape kind {shape.kind!r}")


def sample_shape(rng: np.random.Generator, image_size: int) -> Shape:
    """A random circle, rectangle or triangle of size 8-64 px placed fully inside the image."""
    kind = ("circle", "rectangle", "triangle")[int(rng.integers(3))]
    # Uniform sizes: with rectangles' short sides and triangles' extents below ``size``, about 60% of the
    # boxes are COCO-small (< 32^2 px) and the rest medium.
    size = int(rng.integers(MIN_SIZE, MAX_SIZE + 1))
    if kind == "circle":
        x0, y0 = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
        return Shape(kind, (x0, y0, size))
    if kind == "rectangle":
        # aspect ratio in [1/2, 2], drawn as an integer short side so the geometry stays integral
        short = int(rng.integers(max(size // 2, MIN_SIZE // 2), size + 1))
        width, height = (size, short) if rng.integers(2) else (short, size)
        x0 = int(rng.integers(0, image_size - width + 1))
        y0 = int(rng.integers(0, image_size - height + 1))
        return Shape(kind, (x0, y0, width, height))
    # Triangle: vertices near 120 degrees apart on a circle of diameter ``size``, rounded to whole pixels.
    start = int(rng.integers(360))
    jitter = rng.integers(-20, 21, size=3)
    angles = [(start + 120 * k + int(j)) % 360 for k, j in enumerate(jitter)]
    vertices = [(_scaled_round(size, UNIT_COS[a]), _scaled_round(size, UNIT_SIN[a])) for a in angles]
    xs, ys = [v[0] for v in vertices], [v[1] for v in vertices]
    dx = int(rng.integers(-min(xs), image_size - max(xs) + 1))
    dy = int(rng.integers(-min(ys), image_size - max(ys) + 1))
    return Shape(kind, tuple(int(c) for x, y in vertices for c in (x + dx, y + dy)))


def _scaled_round(diameter: int, unit: int) -> int:
    """round(diameter / 2 * unit / UNIT) in integer arithmetic (halves round up), identical on every machine."""
    return (diameter * unit + UNIT) // (2 * UNIT)


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight (x1, y1, x2, y2) pixel bounds of a non-empty (H, W) bool mask, x2/y2 exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    """IoU of two xyxy boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0) * max(h, 0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def visible_masks(masks: list[np.ndarray]) -> list[np.ndarray]:
    """Masks drawn in order (later on top) -> the visible part of each, (S, S) bool."""
    covered = np.zeros_like(masks[0]) if masks else None
    visible = []
    for mask in reversed(masks):
        visible.append(mask & ~covered)
        covered |= mask
    return visible[::-1]


def scene_is_valid(masks: list[np.ndarray]) -> bool:
    """Every object keeps >= half its pixels visible and no two visible boxes have IoU >= MAX_BOX_IOU."""
    visible = visible_masks(masks)
    for mask, seen in zip(masks, visible):
        if 2 * int(seen.sum()) < int(mask.sum()) or not seen.any():
            return False
    boxes = [mask_box(seen) for seen in visible]
    return all(box_iou(boxes[i], boxes[j]) < MAX_BOX_IOU
               for i in range(len(boxes)) for j in range(i + 1, len(boxes)))


def sample_scene(rng: np.random.Generator, image_size: int) -> tuple[list[Shape], list[np.ndarray]]:
    """0..MAX_OBJECTS shapes in drawing order and their (S, S) bool masks; a shape that breaks
    ``scene_is_valid`` is re-placed (up to PLACEMENT_TRIES times) or skipped."""
    shapes, masks = [], []
    for _ in range(int(rng.integers(0, MAX_OBJECTS + 1))):
        for _ in range(PLACEMENT_TRIES):
            shape = sample_shape(rng, image_size)
            mask = rasterize(shape, image_size)
            if mask.any() and scene_is_valid(masks + [mask]):
                shapes.append(shape)
                masks.append(mask)
                break
    return shapes, masks


def pick_colour(rng: np.random.Generator, avoid: list[np.ndarray], min_distances: list[float]) -> np.ndarray:
    """A random RGB colour (3,) float64 at least ``min_distances[i]`` from each ``avoid[i]`` (best of 100 tries)."""
    best, best_margin = None, -np.inf
    for _ in range(100):
        colour = rng.integers(0, 256, size=3).astype(np.float64)
        margin = min((np.linalg.norm(colour - a) - d for a, d in zip(avoid, min_distances)), default=0.0)
        if margin > best_margin:
            best, best_margin = colour, margin
        if margin >= 0:
            break
    return best


def render_scene(shapes: list[Shape], masks: list[np.ndarray], rng: np.random.Generator, image_size: int) -> np.ndarray:
    """(S, S, 3) uint8: a smooth random texture around a base colour, the shapes in solid contrasting
    colours (drawn in order), then pixel noise over everything."""
    base = rng.integers(0, 256, size=3).astype(np.float64)
    grid = int(rng.integers(3, 12))
    texture = rng.standard_normal(size=(grid, grid, 3), dtype=np.float32) * np.float32(TEXTURE_STD)
    image = base.astype(np.float32) + cv2.resize(texture, (image_size, image_size), interpolation=cv2.INTER_CUBIC)
    boxes = [mask_box(mask) for mask in masks]
    colours: list[np.ndarray] = []
    for index, mask in enumerate(masks):
        touching = [colours[j] for j in range(index) if box_iou(boxes[j], boxes[index]) > 0]
        colour = pick_colour(rng, [base] + touching,
                             [MIN_BACKGROUND_DISTANCE] + [MIN_NEIGHBOUR_DISTANCE] * len(touching))
        colours.append(colour)
        image[mask] = colour
    image += rng.standard_normal(size=image.shape, dtype=np.float32) * np.float32(NOISE_STD)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def scene_annotations(shapes: list[Shape], masks: list[np.ndarray]) -> list[dict]:
    """COCO annotation fields (category_id, bbox [x, y, w, h], area, iscrowd) of each visible object."""
    annotations = []
    for shape, seen in zip(shapes, visible_masks(masks)):
        x1, y1, x2, y2 = mask_box(seen)
        annotations.append({"category_id": CATEGORY_ID[shape.kind], "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "area": int(seen.sum()), "iscrowd": 0})
    return annotations


def make_image(seed: int, split: str, index: int, image_size: int) -> tuple[np.ndarray, list[dict]]:
    """Image ``index`` of ``split``: ((S, S, 3) uint8, its annotations). Geometry and appearance use separate
    streams so that the annotations never depend on floating-point colour/texture computations."""
    geometry = np.random.default_rng([seed, SPLITS[split], index, 0])
    appearance = np.random.default_rng([seed, SPLITS[split], index, 1])
    shapes, masks = sample_scene(geometry, image_size)
    return render_scene(shapes, masks, appearance, image_size), scene_annotations(shapes, masks)


def _write_image(job: tuple[str, str, int, int, int]) -> list[dict]:
    """Draw one image, save it as PNG, return its annotation fields (a picklable job for a process pool)."""
    out_dir, split, index, image_size, seed = job
    pixels, objects = make_image(seed, split, index, image_size)
    # Fast PNG compression: the noise barely compresses anyway, and level 1 is ~2x faster than the default.
    Image.fromarray(pixels).save(os.path.join(out_dir, "images", image_file_name(split, index)), compress_level=1)
    return objects


def image_file_name(split: str, index: int) -> str:
    """The file name of image ``index`` (0-based) of ``split``."""
    return f"{split}_{index:06d}.png"


def generate_split(out_dir: str, split: str, count: int, first_image_id: int, image_size: int, seed: int,
                   workers: int = 1) -> str:
    """Write ``count`` PNGs of ``split`` into ``out_dir/images`` and its ``instances_<split>.json``; return the
    JSON path."""
    os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
    jobs = [(out_dir, split, index, image_size, seed) for index in range(count)]
    if workers > 1 and count > 64:
        with multiprocessing.Pool(workers) as pool:
            per_image = pool.map(_write_image, jobs, chunksize=32)
    else:
        per_image = [_write_image(job) for job in jobs]
    images, annotations = [], []
    for index, objects in enumerate(per_image):
        image_id = first_image_id + index
        images.append({"id": image_id, "file_name": image_file_name(split, index),
                       "width": image_size, "height": image_size})
        for fields in objects:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, **fields})
    data = {
        "info": {"description": "detkit built-in shapes dataset", "version": "1", "seed": seed,
                 "split": split},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": SHAPES_CATEGORIES,
    }
    path = os.path.join(out_dir, f"instances_{split}.json")
    write_json_atomically(data, path, compact=True)
    return path


def generate_shapes(out_dir: str, num_train: int = 2000, num_val: int = 500, image_size: int = 128,
                    seed: int = 0, workers: int | None = None) -> dict[str, str]:
    """Write the built-in dataset to ``out_dir``; returns {"train": json path, "val": json path}.

    Image ids are 1..num_train for train and num_train+1.. for val; images share ``out_dir/images``.
    ``workers`` processes draw the images (default: up to 2 CPUs); the output does not depend on it.
    """
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, workers)
    if image_size < MAX_SIZE:
        raise ValueError(f"image_size must be at least {MAX_SIZE} px to fit {MAX_SIZE} px objects, got {image_size}")
    return {
        "train": generate_split(out_dir, "train", num_train, 1, image_size, seed, workers),
        "val": generate_split(out_dir, "val", num_val, num_train + 1, image_size, seed, workers),
    }
