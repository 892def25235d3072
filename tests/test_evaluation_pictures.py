"""Evaluation pictures: matching counts on a hand-made case, PR data from COCOeval's own array, the gallery's
choice of images, the written PNGs, and the module writing them beside the results JSON when asked."""
import pathlib

import numpy as np
import pytest
from PIL import Image
from test_evaluation import make_coco_gt, xyxy

import detkit.benchmarks.eval as bench
from detkit.data.shapes import generate_shapes
from detkit.engine.cli import DetectionCLI
from detkit.evaluation import CocoEvaluator
from detkit.evaluation.coco import ImageDetections
from detkit.evaluation.matching import confusion_counts, match_images, worst_images
from detkit.evaluation.pictures import PICTURE_NAMES, pictures_folder, write_evaluation_pictures
from detkit.evaluation.pr_curves import pr_curve_data

CATEGORIES = {1: "circle", 2: "square", 3: "triangle"}  # labels 0, 1, 2; background is index 3
CATEGORY_IDS = [1, 2, 3]
G0, G1, G2, G3 = [10, 10, 40, 40], [100, 10, 40, 40], [10, 100, 40, 40], [100, 100, 40, 40]
CROWD, G4 = [150, 150, 50, 50], [20, 20, 100, 100]
ANNOTATIONS = [(1, 1, G0, 0), (1, 2, G1, 0), (1, 3, G2, 0), (1, 1, G3, 0), (1, 2, CROWD, 1), (2, 3, G4, 0)]
IMAGES = {1: (200, 200), 2: (200, 200), 3: (200, 200), 4: (200, 200)}
INSIDE_CROWD = [155, 155, 40, 40]
# image id -> (xywh boxes, scores, labels); comments: what the matching makes of each at score >= 0.3, IoU >= 0.5
DETECTIONS = {
    1: ([G0,                  # circle on the circle G0: correct
         G1,                  # circle on the square G1: a confusion (square seen as circle)
         [60, 60, 30, 30],    # triangle on nothing: a false triangle
         G2,                  # triangle on G2 but score 0.2: not counted, so G2 is missed
         [12, 12, 40, 40],    # second circle on G0, which is taken: a false circle
         INSIDE_CROWD,        # square inside the square crowd region: ignored, as COCOeval does
         INSIDE_CROWD],       # circle inside the square crowd region: a false circle
        [0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.5], [0, 0, 2, 2, 0, 1, 0]),  # and the circle G3 is missed
    2: ([[22, 22, 98, 98],    # circle scored higher and IoU 0.96 with the triangle G4: own class goes first,
         [20, 20, 100, 130]],  # so this triangle (IoU 0.77) takes G4 and the circle is a false circle
        [0.95, 0.5], [0, 2]),
    3: ([], [], []),          # nothing there, nothing found
    4: ([[50, 50, 30, 30]], [0.9], [1]),  # a false square
}
EXPECTED_COUNTS = [  # rows: ground truth circle, square, triangle, background; columns: predicted, same order
    [1, 0, 0, 1],
    [1, 0, 0, 0],
    [0, 0, 1, 1],
    [3, 1, 1, 0],
]
EXPECTED_ERRORS = {1: 3 + 4, 2: 1, 3: 0, 4: 1}  # missed + false (a confusion is one of each)


def hand_made_gt():
    return make_coco_gt(IMAGES, ANNOTATIONS, CATEGORIES)


def hand_made_records() -> dict:
    return {image_id: ImageDetections(xyxy(*boxes).numpy(), np.array(scores, dtype=np.float32),
                                      np.array(labels, dtype=np.int64))
            for image_id, (boxes, scores, labels) in DETECTIONS.items()}


def test_confusion_counts_on_a_hand_made_case():
    matches = match_images(hand_made_gt(), hand_made_records(), CATEGORY_IDS, score_threshold=0.3, iou_threshold=0.5)
    assert [m.image_id for m in matches] == [1, 2, 3, 4]
    assert confusion_counts(matches, num_classes=3).tolist() == EXPECTED_COUNTS
    assert {m.image_id: m.errors for m in matches} == EXPECTED_ERRORS
    first = matches[0]
    assert first.det_scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5])  # 0.2 dropped, the crowd one ignored
    assert first.det_to_gt.tolist() == [0, 1, -1, -1, -1]  # ground truth in annotation order, crowd left out
    assert first.found.tolist() == [True, False, False, False] and first.correct.tolist() == [True] + [False] * 4


def test_thresholds_change_the_counts():
    matches = match_images(hand_made_gt(), hand_made_records(), CATEGORY_IDS, score_threshold=0.1, iou_threshold=0.5)
    counts = confusion_counts(matches, num_classes=3)
    assert counts[2, 2] == 2 and counts[2, 3] == 0  # the 0.2 triangle now finds G2
    strict = match_images(hand_made_gt(), hand_made_records(), CATEGORY_IDS, score_threshold=0.3, iou_threshold=0.8)
    assert confusion_counts(strict, num_classes=3)[2, 2] == 0  # IoU 0.77 no longer matches G4


def test_worst_images_are_the_ones_with_most_errors():
    matches = match_images(hand_made_gt(), hand_made_records(), CATEGORY_IDS, score_threshold=0.3, iou_threshold=0.5)
    assert [m.image_id for m in worst_images(matches, count=2)] == [1, 2]  # 7 errors, then 1 (ties: lower id)
    assert [m.image_id for m in worst_images(matches, count=10)] == [1, 2, 4]  # image 3 has no error


@pytest.fixture(scope="module")
def generated_evaluation():
    """COCOeval of random detections on a generated ground truth; the 4th of 4 classes has no ground truth."""
    coco_gt, category_ids, detections = bench.generated_evaluation(40, 30, num_classes=4, classes_without_gt=1, seed=1)
    evaluator = CocoEvaluator(coco_gt, category_ids)
    for image_id, boxes, scores, labels in detections:
        evaluator.update(image_id, boxes, scores, labels)
    return evaluator, evaluator.compute(verbose=False)


def test_pr_curve_data_is_cocoevals_precision_slice(generated_evaluation):
    evaluator, result = generated_evaluation
    coco_eval = evaluator.last_cocoeval
    order = evaluator.category_ids[::-1]  # a label order other than COCOeval's: the columns must follow it
    recall, precision = pr_curve_data(coco_eval, order)
    np.testing.assert_array_equal(recall, np.linspace(0, 1, 101))
    assert precision.shape == (2, 4, 101)
    # (IoU 0.50, 0.55, ..., 0.95; 101 recalls; classes; areas all, small, medium, large; maxDets 1, 10, 100)
    array = coco_eval.eval["precision"]
    for k, category_id in enumerate(order):
        column = evaluator.category_ids.index(category_id)
        for t, iou_index in enumerate((0, 5)):
            expected = array[iou_index, :, column, 0, 2]
            np.testing.assert_array_equal(precision[t, k], np.where(expected == -1, np.nan, expected))
    assert np.isnan(precision[:, 0]).all()  # the class without ground truth, first in reversed order
    ap50 = [row[2] for row in result.per_class[::-1][1:]]
    assert precision[0, 1:].mean(axis=1) == pytest.approx(ap50)  # each curve's mean is COCO's AP at that IoU


def test_pictures_are_written_as_readable_pngs(generated_evaluation, tmp_path):
    evaluator, _ = generated_evaluation
    loaded = []

    def load_image(image_id: int) -> np.ndarray:
        loaded.append(image_id)
        return np.full((480, 640, 3), 90, dtype=np.uint8)

    folder = tmp_path / "results_val_pictures"
    paths = write_evaluation_pictures(evaluator.last_cocoeval, evaluator.coco_gt, evaluator.last_records,
                                      evaluator.category_ids, evaluator.class_names, load_image, str(folder),
                                      num_images=3)
    assert paths == [str(folder / name) for name in PICTURE_NAMES]
    assert sorted(p.name for p in folder.iterdir()) == sorted(PICTURE_NAMES)  # no temporary file left
    for path in paths:
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and image.width >= 400 and image.height >= 300
        assert 5_000 < pathlib.Path(path).stat().st_size < 3_000_000
    matches = match_images(evaluator.coco_gt, evaluator.last_records, evaluator.category_ids, 0.3, 0.5)
    assert loaded == [m.image_id for m in worst_images(matches, count=3)]  # the gallery drew the worst three


def test_pictures_folder_is_named_after_the_results():
    assert pictures_folder("runs/x/checkpoints/best_results_val.json") == "runs/x/checkpoints/best_results_val_pictures"


@pytest.mark.usefixtures("one_thread")
def test_validation_writes_pictures_only_when_asked(tmp_path):
    generate_shapes(str(tmp_path / "shapes"), num_train=2, num_val=4, seed=0, workers=1)
    root = tmp_path / "shapes"
    cli = DetectionCLI(run=False, args=[
        "--config", str(pathlib.Path(__file__).resolve().parents[1] / "configs" / "retinanet_shapes.yaml"),
        "--data.train_images", str(root / "images"), "--data.train_annotations", str(root / "instances_train.json"),
        "--data.val_images", str(root / "images"), "--data.val_annotations", str(root / "instances_val.json"),
        "--data.num_workers", "0", "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.logger=false", "--trainer.enable_progress_bar", "false",
        "--model.results_path", str(tmp_path / "plain.json"), "--model.eval_backend", "faster_coco_eval",
        "--model.detector.init_args.inference.score_threshold", "0.0"], save_config_callback=None)
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert (tmp_path / "plain.json").is_file() and not (tmp_path / "plain_pictures").exists()
    assert cli.model.last_evaluation.num_detections > 0
    cli.model.write_pictures = True
    cli.model.hparams.results_path = str(tmp_path / "asked.json")
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    assert cli.model.pictures_dir == str(tmp_path / "asked_pictures")
    assert sorted(p.name for p in (tmp_path / "asked_pictures").iterdir()) == sorted(PICTURE_NAMES)
