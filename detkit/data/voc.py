"""Pascal VOC annotations (Annotations/*.xml + ImageSets/Main/<split>.txt) as a COCO instances dict.

VOC corners are 1-based inclusive pixel indices: x = xmin - 1, w = xmax - xmin + 1 (same for y), so the COCO
boxes are [x, y, w, h] in absolute pixels. "difficult" objects become crowd regions by default (not trained on,
ignored by COCO evaluation, as VOC evaluation ignores them). Image ids are 1..N in split order; category ids
are 1..K in class order. ``tools/voc2coco.py`` is the command line.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from detkit.atomic_io import write_json_atomically

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
    "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def split_stems(root: str, split: str) -> list[str]:
    """The image stems of ``split`` from ImageSets/Main/<split>.txt, or every Annotations/*.xml for "all"."""
    if split == "all":
        return sorted(os.path.splitext(name)[0] for name in os.listdir(os.path.join(root, "Annotations"))
                      if name.endswith(".xml"))
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path} (use --split all to take every annotation)")
    with open(path, encoding="utf-8") as f:
        return [line.split()[0] for line in f if line.strip()]


def parse_voc_xml(path: str) -> dict:
    """{"file_name", "width", "height", "objects": [{"name", "difficult", "xyxy" 1-based inclusive}]} of one XML."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"{path}: not valid XML: {error}") from error
    size = root.find("size")
    if size is None or size.findtext("width") is None or size.findtext("height") is None:
        raise ValueError(f"{path}: no <size><width>/<height>")
    objects = []
    for index, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        name = (obj.findtext("name") or "").strip()
        if box is None or not name:
            raise ValueError(f"{path}: object {index} has no <name> or <bndbox>")
        try:
            xyxy = [float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax")]
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: object {index} ({name}) has a bad <bndbox>: {error}") from error
        objects.append({"name": name, "difficult": (obj.findtext("difficult") or "0").strip() == "1", "xyxy": xyxy})
    return {
        "file_name": (root.findtext("filename") or "").strip(),
        "width": int(float(size.findtext("width"))),
        "height": int(float(size.findtext("height"))),
        "objects": objects,
    }


def convert_voc(root: str, split: str, classes: list[str] | None = None, difficult: str = "crowd") -> dict:
    """The COCO instances dict of one VOC split: ``images``, ``annotations`` (``bbox`` [x, y, w, h] absolute
    pixels, 0-based) and ``categories``.

    Args:
        root: folder with Annotations/, JPEGImages/ and ImageSets/Main/.
        split: a name in ImageSets/Main ("train", "val", "trainval", "test") or "all".
        classes: class names in label order; default the 20 VOC classes if every name found is one of them,
            else the sorted names found.
        difficult: "crowd", "keep" or "drop" for objects marked difficult.
    """
    if difficult not in ("crowd", "keep", "drop"):
        raise ValueError(f"difficult must be 'crowd', 'keep' or 'drop', got {difficult!r}")
    parsed = []
    for stem in split_stems(root, split):
        path = os.path.join(root, "Annotations", f"{stem}.xml")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"annotation not found: {path} (listed in split {split!r})")
        entry = parse_voc_xml(path)
        # LabelImg and VOC keep the name in <filename>; fall back to the stem when it does not name a real file.
        if not entry["file_name"] or not os.path.isfile(os.path.join(root, "JPEGImages", entry["file_name"])):
            entry["file_name"] = f"{stem}.jpg"
        parsed.append((path, entry))
    found = sorted({obj["name"] for _, entry in parsed for obj in entry["objects"]})
    if classes is None:
        classes = list(VOC_CLASSES) if set(found) <= set(VOC_CLASSES) else found
    category_of = {name: index + 1 for index, name in enumerate(classes)}
    images, annotations = [], []
    for image_id, (path, entry) in enumerate(parsed, start=1):
        images.append({"id": image_id, "file_name": entry["file_name"],
                       "width": entry["width"], "height": entry["height"]})
        for obj in entry["objects"]:
            if obj["name"] not in category_of:
                raise ValueError(f"{path}: class {obj['name']!r} is not in the class list {classes}")
            if obj["difficult"] and difficult == "drop":
                continue
            x1, y1, x2, y2 = obj["xyxy"]
            w, h = x2 - x1 + 1, y2 - y1 + 1
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category_of[obj["name"]],
                "bbox": [x1 - 1, y1 - 1, w, h], "area": w * h,
                "iscrowd": int(obj["difficult"] and difficult == "crowd"),
            })
    return {"images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n, "supercategory": "none"} for n, i in category_of.items()]}


def write_voc_as_coco(root: str, split: str, out: str, classes: list[str] | None = None,
                      difficult: str = "crowd") -> dict:
    """Convert a split with ``convert_voc`` and write it to the JSON file ``out``; returns the dict written."""
    data = convert_voc(root, split, classes, difficult)
    write_json_atomically(data, out)
    return data
