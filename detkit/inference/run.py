"""Predicting on many image files: an annotated copy of each, one COCO results JSON, unreadable files counted.

This is ``tools/predict.py``'s work; an image that cannot be read is reported and skipped, the others go on.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from PIL import Image
from tqdm import tqdm

from detkit.atomic_io import write_json_atomically
from detkit.data.coco import BadImageError
from detkit.drawing.boxes import annotate
from detkit.evaluation import to_coco_results
from detkit.evaluation.coco import ImageDetections
from detkit.inference.images import read_image
from detkit.inference.overrides import PredictOptions
from detkit.inference.predictor import Detector

DETECTIONS_FILE = "detections.json"  # COCO results: [{image_id, category_id, bbox [x, y, w, h], score}]
IMAGES_FILE = "images.json"  # COCO "images" (id <-> input file) and "categories", the unreadable files


@dataclass
class PredictionRun:
    """What ``predict_files`` wrote: annotated image paths, the two JSON files, and the unreadable inputs."""

    annotated: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # one message per input that could not be read
    num_detections: int = 0
    detections_path: str = ""
    images_path: str = ""


def predict_files(detector: Detector, paths: Sequence[str], out_dir: str, *, options: PredictOptions = PredictOptions(),
                  batch_size: int = 8, progress: bool = True) -> PredictionRun:
    """Predict ``paths`` in batches with ``options`` (None fields: the checkpoint's settings); write
    ``out_dir/<name>.png`` per readable input (every detection written drawn), ``detections.json`` and
    ``images.json``. Image ids are input positions from 1; boxes in the JSON are original pixels (xywh)."""
    os.makedirs(out_dir, exist_ok=True)
    names = output_names(paths)
    run, records, entries = PredictionRun(), {}, []
    with tqdm(total=len(paths), unit="image", desc="predict", disable=not progress) as bar:
        for start in range(0, len(paths), batch_size):
            readable = _read_batch(paths, range(start, min(start + batch_size, len(paths))), run, bar)
            predictions = detector.predict([array for _, array in readable], batch_size=batch_size, **asdict(options))
            for (index, array), prediction in zip(readable, predictions):
                annotated = os.path.join(out_dir, names[index])
                Image.fromarray(annotate(array, prediction)).save(annotated)
                run.annotated.append(annotated)
                records[index + 1] = ImageDetections(prediction.boxes.numpy(), prediction.scores.numpy(),
                                                     prediction.labels.numpy())
                height, width = prediction.image_size
                entries.append({"id": index + 1, "file_name": paths[index], "width": width, "height": height,
                                "annotated": names[index]})
            bar.update(min(batch_size, len(paths) - start))
    results = to_coco_results(records, detector.category_ids)
    run.num_detections = len(results)
    run.detections_path, run.images_path = os.path.join(out_dir, DETECTIONS_FILE), os.path.join(out_dir, IMAGES_FILE)
    write_json_atomically(results, run.detections_path)
    categories = [{"id": i, "name": n} for i, n in zip(detector.category_ids, detector.class_names)]
    write_json_atomically({"images": entries, "categories": categories, "unreadable": run.unreadable}, run.images_path)
    return run


def _read_batch(paths: Sequence[str], indices: range, run: PredictionRun, bar: tqdm) -> list:
    """(index, (H, W, 3) uint8) of the readable inputs among ``indices``; the others are reported and counted."""
    readable = []
    for index in indices:
        try:
            readable.append((index, read_image(paths[index])))
        except BadImageError as error:
            run.unreadable.append(str(error))
            bar.write(f"skipped: {error}")
    return readable


def output_names(paths: Sequence[str], extension: str = ".png") -> list[str]:
    """``<stem><extension>`` per input; a stem met again gets ``_2``, ``_3``... (inputs from different folders)."""
    names, taken = [], set()
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        name, copy = f"{stem}{extension}", 1
        while name in taken:
            copy += 1
            name = f"{stem}_{copy}{extension}"
        taken.add(name)
        names.append(name)
    return names


def summary(run: PredictionRun, out_dir: str) -> str:
    """The closing lines ``tools/predict.py`` prints."""
    written = (f"{len(run.annotated)} annotated images and {run.num_detections} detections written to {out_dir} "
               f"({DETECTIONS_FILE}: COCO results; {IMAGES_FILE}: image ids and classes)")
    return with_unreadable(written, run.unreadable, "image(s) could not be read and were skipped")


def with_unreadable(written: str, unreadable: Sequence[str], what: str) -> str:
    """The closing line ``written``, then, if any input was unreadable, their count, ``what`` and one line each."""
    lines = [written]
    if unreadable:
        lines.append(f"{len(unreadable)} {what}:")
        lines += [f"  {message}" for message in unreadable]
    return "\n".join(lines)
