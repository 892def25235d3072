"""detkit.data.voc (tools/voc2coco.py): VOC XML -> COCO JSON, 1-based inclusive corners, difficult objects, classes."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detkit.data import voc
from detkit.data.coco import CocoDetection

TOOL = Path(__file__).resolve().parents[1] / "tools" / "voc2coco.py"


def xml(filename, width, height, objects):
    body = "".join(
        f"<object><name>{name}</name><difficult>{int(difficult)}</difficult><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        for name, difficult, (x1, y1, x2, y2) in objects)
    return (f"<annotation><filename>{filename}</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{body}</annotation>")


@pytest.fixture
def voc_root(tmp_path):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "Annotations" / "0001.xml").write_text(
        xml("0001.jpg", 40, 30, [("dog", False, (1, 1, 10, 20)), ("cat", True, (5, 6, 15, 16))]))
    (tmp_path / "Annotations" / "0002.xml").write_text(xml("renamed.jpg", 20, 10, [("person", False, (11, 2, 20, 10))]))
    for stem, (w, h) in (("0001", (40, 30)), ("0002", (20, 10))):
        Image.fromarray(np.zeros((h, w, 3), dtype=np.uint8)).save(tmp_path / "JPEGImages" / f"{stem}.jpg")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("0002\n0001\n")
    return tmp_path


def test_conversion_hand_computed(voc_root):
    data = voc.convert_voc(str(voc_root), "train")
    assert data["images"] == [{"id": 1, "file_name": "0002.jpg", "width": 20, "height": 10},
                              {"id": 2, "file_name": "0001.jpg", "width": 40, "height": 30}]
    names = [c["name"] for c in data["categories"]]
    assert names == list(voc.VOC_CLASSES)  # all found names are VOC classes: the standard 20, ids 1..20
    ids = {c["name"]: c["id"] for c in data["categories"]}
    assert data["annotations"] == [
        {"id": 1, "image_id": 1, "category_id": ids["person"], "bbox": [10.0, 1.0, 10.0, 9.0], "area": 90.0,
         "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": ids["dog"], "bbox": [0.0, 0.0, 10.0, 20.0], "area": 200.0,
         "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": ids["cat"], "bbox": [4.0, 5.0, 11.0, 11.0], "area": 121.0,
         "iscrowd": 1},
    ]


def test_difficult_options_and_custom_classes(voc_root):
    dropped = voc.convert_voc(str(voc_root), "train", classes=["person", "dog", "cat"], difficult="drop")
    assert [(a["category_id"], a["iscrowd"]) for a in dropped["annotations"]] == [(1, 0), (2, 0)]
    kept = voc.convert_voc(str(voc_root), "all", classes=["person", "dog", "cat"], difficult="keep")
    assert [im["file_name"] for im in kept["images"]] == ["0001.jpg", "0002.jpg"]
    assert [(a["category_id"], a["iscrowd"]) for a in kept["annotations"]] == [(2, 0), (3, 0), (1, 0)]


def test_errors_name_file_and_class(voc_root):
    with pytest.raises(ValueError, match=r"0001.xml: class 'cat' is not in the class list \['person', 'dog'\]"):
        voc.convert_voc(str(voc_root), "train", classes=["person", "dog"])
    with pytest.raises(FileNotFoundError, match=r"ImageSets/Main/val.txt"):
        voc.convert_voc(str(voc_root), "val")
    (voc_root / "Annotations" / "0002.xml").write_text("<annotation><size>")
    with pytest.raises(ValueError, match="0002.xml: not valid XML"):
        voc.convert_voc(str(voc_root), "train")


def test_output_loads_through_coco_detection(voc_root):
    path = voc_root / "instances_train.json"
    path.write_text(json.dumps(voc.convert_voc(str(voc_root), "train", classes=["person", "dog", "cat"])))
    dataset = CocoDetection(str(voc_root / "JPEGImages"), str(path))
    _, target = dataset[1]
    assert target["boxes"].tolist() == [[0.0, 0.0, 10.0, 20.0]] and target["labels"].tolist() == [1]
    assert len(dataset.coco.getAnnIds(iscrowd=True)) == 1


def test_command_line_writes_the_json(voc_root):
    out = voc_root / "out" / "instances.json"
    done = subprocess.run([sys.executable, str(TOOL), "--root", str(voc_root), "--split", "train", "--out", str(out),
                           "--classes", "person, dog,cat", "--difficult", "drop"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "2 images, 2 boxes, 3 classes" in done.stdout
    written = json.loads(out.read_text())
    assert written == voc.convert_voc(str(voc_root), "train", classes=["person", "dog", "cat"], difficult="drop")
