"""tools/predict.py (``detkit.inference.cli.predict_command``) for real: an annotated image per readable input, the
COCO results JSON, unreadable images reported and counted without stopping the others, and its exit status."""
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from inference_helpers import save_perfect_checkpoint
from nonsquare_data import CATEGORY_IDS
from PIL import Image

from detkit.drawing.boxes import class_colour
from detkit.inference.cli import predict_command

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def perfect(tmp_path_factory):
    return save_perfect_checkpoint(tmp_path_factory.mktemp("perfect") / "run")


def run_predict(*args: str) -> int:
    """The exit status of ``tools/predict.py ARGS``: what ``predict_command`` returns, or the code of the
    ``SystemExit`` argparse raises for a wrong command line."""
    try:
        return predict_command(list(args))
    except SystemExit as exit_info:
        return exit_info.code


def test_predict_writes_every_readable_image_and_reports_the_unreadable_ones(perfect, tmp_path, capsys):
    checkpoint, config, data = perfect
    folder = tmp_path / "photos"
    shutil.copytree(checkpoint.parents[1] / "data" / "images", folder)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")  # sorts first in the folder
    (folder / "notes.txt").write_text("not an image: left out of the folder's images")
    out = tmp_path / "out"
    code = run_predict("--checkpoint", str(checkpoint), "--config", str(config), "--images", str(folder),
                       str(tmp_path / "missing.jpg"), "--out", str(out), "--device", "cpu")
    captured = capsys.readouterr()
    assert code == 1  # some input could not be read; everything else was written
    assert "2 image(s) could not be read" in captured.out
    assert "broken.png" in captured.out and "image file not found: " + str(tmp_path / "missing.jpg") in captured.out
    assert "predict: 100%" in captured.err  # the progress bar reached the end

    images = json.loads((out / "images.json").read_text())
    entries = {Path(entry["file_name"]).name: entry for entry in images["images"]}
    originals = {image["file_name"]: image for image in data["images"]}
    assert set(entries) == set(originals) and len(images["unreadable"]) == 2
    assert images["categories"] == [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, ["red", "green", "blue"])]
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == len(data["annotations"])
    for name, entry in entries.items():
        original = originals[name]
        drawn = np.asarray(Image.open(out / entry["annotated"]))
        assert drawn.shape == (original["height"], original["width"], 3) == (entry["height"], entry["width"], 3)
        expected = sorted((a["category_id"], a["bbox"]) for a in data["annotations"] if a["image_id"] == original["id"])
        found = sorted((d["category_id"], d["bbox"]) for d in detections if d["image_id"] == entry["id"])
        assert [c for c, _ in found] == [c for c, _ in expected]
        for (category, (x, y, w, h)), (_, bbox) in zip(found, expected):
            assert [x, y, w, h] == pytest.approx(bbox, abs=0.25)  # original pixels, xywh
            assert tuple(drawn[int(y + h / 2), int(x)]) == class_colour(CATEGORY_IDS.index(category))


def test_predict_exits_0_when_every_image_is_read_and_names_a_bad_checkpoint(perfect, tmp_path, capsys):
    checkpoint, config, _ = perfect
    image = checkpoint.parents[1] / "data" / "images" / "200x90.png"
    code = run_predict("--checkpoint", str(checkpoint), "--config", str(config), "--images", str(image),
                       "--out", str(tmp_path / "out"))
    assert code == 0 and (tmp_path / "out" / "200x90.png").is_file()
    assert "1 annotated images and 3 detections" in capsys.readouterr().out
    (tmp_path / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:1000])
    code = run_predict("--checkpoint", str(tmp_path / "truncated.ckpt"), "--images", str(image),
                       "--out", str(tmp_path / "out2"))
    assert code == 1 and "truncated.ckpt: cannot be read" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    assert run_predict("--checkpoint", str(checkpoint), "--images", str(tmp_path / "*.gif"),
                       "--out", str(tmp_path / "out3")) == 2
    assert "no file matches" in capsys.readouterr().err


@pytest.mark.parametrize("options, problem", [
    (["--score-threshold", "1.5"], r"--score-threshold must lie in \[0, 1\], got 1.5"),
    (["--detections-per-image", "0"], "--detections-per-image must be an integer >= 1, got 0"),
    (["--classes", "red", "cat"],
     r"--classes: unknown class 'cat'; the model's classes are \['red', 'green', 'blue'\]"),
    # the perfect predictor has no NMS settings to override
    (["--nms-threshold", "0.4", "--class-agnostic"],
     r"--nms-threshold, --class-agnostic: the model \(ColourBoxFinder\) has no `inference` settings"),
])
def test_a_bad_option_is_named_and_nothing_is_written(perfect, tmp_path, capsys, options, problem):
    checkpoint, config, _ = perfect
    image = checkpoint.parents[1] / "data" / "images" / "200x90.png"
    code = run_predict("--checkpoint", str(checkpoint), "--config", str(config), "--images", str(image),
                       "--out", str(tmp_path / "out"), *options)
    assert code == 2 and re.search(problem, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_classes_keep_only_the_named_classes(perfect, tmp_path):
    checkpoint, config, data = perfect
    out = tmp_path / "out"
    assert run_predict("--checkpoint", str(checkpoint), "--config", str(config), "--images",
                       str(checkpoint.parents[1] / "data" / "images"), "--out", str(out), "--classes", "blue") == 0
    detections = json.loads((out / "detections.json").read_text())
    blue = [a for a in data["annotations"] if a["category_id"] == CATEGORY_IDS[2]]
    assert len(detections) == len(blue) > 0 and {d["category_id"] for d in detections} == {CATEGORY_IDS[2]}
