"""Checks of a train or val split before it is used, with errors naming the ``data.*`` key and the file.

Without them a missing folder surfaces as the first image not found, a split with nothing to learn trains
silently for its whole budget, and a val split without images crashes at the end of the first validation.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

from detkit.data.coco import CocoDetection


def check_split_paths(split: str, images: str, annotations: str) -> None:
    """``data.<split>_images`` is an existing folder and ``data.<split>_annotations`` an existing file.

    Raises FileNotFoundError naming the key and the path.
    """
    for key, path, exists, kind in ((f"data.{split}_images", images, os.path.isdir, "folder"),
                                    (f"data.{split}_annotations", annotations, os.path.isfile, "file")):
        if not exists(path):
            what = f"is not a {kind}" if os.path.exists(path) else "does not exist"
            raise FileNotFoundError(f"{key}: {path} {what}")


def check_train_split(dataset: CocoDetection, drop_empty: bool, skip_bad_images: bool) -> None:
    """The training split has images and boxes to learn from; warns about classes it has no box of.

    Raises ValueError naming ``data.train_annotations`` and its file when no image is left or no image has a
    usable box (after crowd regions and degenerate boxes are left out).
    """
    source = f"data.train_annotations: {dataset.annotation_file}"
    if len(dataset) == 0:
        raise ValueError(f"{source} leaves no training image (data.drop_empty={drop_empty}, "
                         f"data.skip_bad_images={skip_bad_images})")
    labels = [image_labels for _, _, image_labels in dataset.original_targets()]
    counts = np.bincount(np.concatenate(labels), minlength=dataset.categories.num_classes)  # (K,)
    if counts.sum() == 0:
        raise ValueError(f"{source}: none of its {len(dataset)} images has a usable box (no annotations, or only "
                         f"crowd regions and degenerate boxes): there is nothing to learn")
    missing = [name for name, count in zip(dataset.categories.class_names, counts) if count == 0]
    if missing:
        warnings.warn(f"{source} has no usable box of class(es) {missing}: the model cannot learn to detect "
                      f"them, and their AP will stay near 0", stacklevel=3)


def check_val_split(dataset: CocoDetection) -> None:
    """The validation split has images; warns when it has no ground truth to score against.

    Raises ValueError naming ``data.val_annotations`` and its file when no image is left.
    """
    source = f"data.val_annotations: {dataset.annotation_file}"
    if len(dataset) == 0:
        raise ValueError(f"{source} has no image to evaluate on")
    annotations = dataset.coco.dataset["annotations"]
    if not any(not annotation["iscrowd"] for annotation in annotations):
        warnings.warn(f"{source} has no annotations (besides crowd regions): COCO defines no AP or AR without "
                      f"ground truth, so every number is -1 and val/AP cannot pick the best checkpoint",
                      stacklevel=3)
