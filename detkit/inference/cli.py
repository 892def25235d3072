"""The command lines of inference, each ``argv -> exit status``: ``predict_command`` (``tools/predict.py``),
``export_command`` (``tools/export.py``) and ``import_torchvision_command`` (``tools/import_torchvision.py``).

Exit status: 0 done; 1 the work failed and said why on stderr (an unreadable checkpoint or input, an export whose
check failed, a bad weights file); 2 a wrong command line (argparse's ``SystemExit(2)``, raised before anything is
written). ``predict_command`` predicts the images (``detkit.inference.run``) and the videos
(``detkit.inference.video``), exits 1 when some input was unreadable (all others written) and prints a summary of
each; docs/guide/predict.md describes its options and outputs.
"""
from __future__ import annotations

import argparse
import sys

from detkit.inference.checkpoint import CheckpointError
from detkit.inference.export import ExportReport, OnnxExportError, export_onnx
from detkit.inference.images import expand_image_paths
from detkit.inference.import_torchvision import ARCHITECTURES, ImportFailed, import_torchvision
from detkit.inference.onnx_check import check_images
from detkit.inference.onnx_speed import compare_speed, speed_table
from detkit.inference.overrides import PredictOptions
from detkit.inference.predictor import Detector, load
from detkit.inference.run import predict_files, summary
from detkit.inference.video import expand_video_paths, predict_videos, video_summary

PREDICT_DESCRIPTION = ("Predict with a trained checkpoint: annotated images and a COCO results JSON, annotated videos "
                       "and JSON lines.")
EXPORT_DESCRIPTION = "Export a trained checkpoint to ONNX, pre- and post-processing included, checked against PyTorch."
IMPORT_DESCRIPTION = ("Import one of torchvision's six COCO detectors into a detkit checkpoint "
                      "(docs/guide/pretrained.md).")


def flag(option: str) -> str:
    """``detections_per_image`` -> ``--detections-per-image``: errors name the option as it was typed."""
    return "--" + option.replace("_", "-")


def predict_parser() -> argparse.ArgumentParser:
    """The options of ``predict_command``; the settings group defaults to None: the checkpoint's own."""
    parser = argparse.ArgumentParser(description=PREDICT_DESCRIPTION)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by training")
    parser.add_argument("--images", nargs="+", default=[], metavar="PATH", help="image files, folders or glob patterns")
    parser.add_argument("--videos", nargs="+", default=[], metavar="PATH", help="video files, folders or glob patterns")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    settings = parser.add_argument_group("settings for this run (default: the checkpoint's)")
    settings.add_argument("--score-threshold", "--score", type=float, metavar="SCORE",
                          help="keep detections scoring >= this")
    settings.add_argument("--nms-threshold", type=float, metavar="IOU",
                          help="NMS IoU above which the lower-scored box goes")
    settings.add_argument("--class-agnostic", action=argparse.BooleanOptionalAction,
                          help="NMS over all classes together (--no-class-agnostic: per class)")
    settings.add_argument("--detections-per-image", type=int, metavar="N",
                          help="the most detections per image or frame")
    settings.add_argument("--min-size", type=int, metavar="PX", help="resize the shorter side to this many pixels ...")
    settings.add_argument("--max-size", type=int, metavar="PX", help="... unless the longer side would exceed this")
    settings.add_argument("--classes", nargs="+", metavar="NAME", help="keep these classes only (names)")
    parser.add_argument("--config", help="build the model from this YAML instead of the checkpoint's config")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=8)
    return parser


def parse_predict_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``argv`` parsed (None: ``sys.argv[1:]``); no input or a batch size below 1 is a command-line error."""
    args = parser.parse_args(argv)
    if not args.images and not args.videos:
        parser.error("give --images, --videos or both")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return args


def predict_options(args: argparse.Namespace) -> PredictOptions:
    """The settings group of the command line; None fields keep the checkpoint's settings."""
    return PredictOptions(args.score_threshold, args.nms_threshold, args.class_agnostic, args.detections_per_image,
                          args.min_size, args.max_size, args.classes)


def predict_inputs(detector: Detector, images: list[str], videos: list[str], out_dir: str, options: PredictOptions,
                   batch_size: int) -> bool:
    """Predict ``images`` and ``videos`` into ``out_dir`` and print each summary; True when some input was
    unreadable (the others are written all the same)."""
    unreadable = False
    if images:
        run = predict_files(detector, images, out_dir, options=options, batch_size=batch_size)
        print(summary(run, out_dir))
        unreadable |= bool(run.unreadable)
    if videos:
        run = predict_videos(detector, videos, out_dir, options=options, batch_size=batch_size)
        print(video_summary(run, out_dir))
        unreadable |= bool(run.unreadable)
    return unreadable


def predict_command(argv: list[str] | None = None) -> int:
    """Run ``tools/predict.py`` on ``argv`` (None: ``sys.argv[1:]``); returns the exit status 0 or 1, and raises
    ``SystemExit(2)`` naming the option for a wrong command line (bad value, unknown class, no such file)."""
    parser = predict_parser()
    args = parse_predict_args(parser, argv)
    options = predict_options(args)
    try:
        options.check(flag)
        images, videos = expand_image_paths(args.images), expand_video_paths(args.videos)
    except ValueError as error:
        parser.error(str(error))
    try:
        detector = load(args.checkpoint, config=args.config, device=args.device)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    try:
        detector.check_options(options, flag)  # class names and what the model can override
    except ValueError as error:
        parser.error(str(error))
    return 1 if predict_inputs(detector, images, videos, args.out, options, args.batch_size) else 0


def export_parser() -> argparse.ArgumentParser:
    """The options of ``export_command``."""
    parser = argparse.ArgumentParser(description=EXPORT_DESCRIPTION)
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by training")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--check-images", nargs="+", metavar="IMAGE",
                        help="images (files, folders, globs) of the parity check; default: three synthetic ones")
    parser.add_argument("--bench", type=int, default=0, metavar="N",
                        help="also time N passes over the check images with PyTorch and with onnxruntime")
    parser.add_argument("--threads", type=int, help="CPU threads of both while timing (default: torch's)")
    return parser


def parity_lines(report: ExportReport) -> list[str]:
    """One line per check image: its size (w x h), onnxruntime's detection count and the largest differences
    from PyTorch (boxes in pixels, scores)."""
    lines = []
    for parity in report.parity:
        height, width = parity.size
        lines.append(f"{width}x{height}: {parity.onnx_count} detections, max box difference "
                     f"{parity.max_box_difference:.2e} px, max score difference {parity.max_score_difference:.2e}")
    return lines


def export_command(argv: list[str] | None = None) -> int:
    """Run ``tools/export.py`` on ``argv`` (None: ``sys.argv[1:]``): write the ONNX model, print the parity check
    of each image and, with ``--bench``, the speed table. Returns 0 written and checked, 1 the checkpoint unusable
    or onnxruntime's detections differ from PyTorch's (nothing written); ``SystemExit(2)`` for a wrong command line."""
    parser = export_parser()
    args = parser.parse_args(argv)
    if args.bench < 0 or (args.threads is not None and args.threads < 1):
        parser.error(f"--bench must be >= 0 and --threads >= 1, got {args.bench} and {args.threads}")
    try:
        images = expand_image_paths(args.check_images) if args.check_images else check_images()
    except ValueError as error:
        parser.error(str(error))
    try:
        detector = load(args.checkpoint, device="cpu")
        report = export_onnx(detector, args.out, images=images)
    except (CheckpointError, OnnxExportError, ValueError) as error:  # a bad check image is a ValueError naming it
        print(f"error: {error}", file=sys.stderr)
        return 1
    for line in parity_lines(report):
        print(line)
    print(f"wrote {report.path} (opset {report.opset}, classes {report.metadata['class_names']})")
    if args.bench:
        print(speed_table(compare_speed(detector, report.path, images, repeats=args.bench, threads=args.threads)))
    return 0


def import_torchvision_parser() -> argparse.ArgumentParser:
    """The options of ``import_torchvision_command``."""
    parser = argparse.ArgumentParser(description=IMPORT_DESCRIPTION)
    parser.add_argument("--arch", required=True, choices=list(ARCHITECTURES), help="torchvision's builder name")
    parser.add_argument("--weights", required=True, help="the state dict file, or DEFAULT to download it")
    parser.add_argument("--out", required=True, help="the .ckpt to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    return parser


def import_torchvision_command(argv: list[str] | None = None) -> int:
    """Run ``tools/import_torchvision.py`` on ``argv`` (None: ``sys.argv[1:]``): write the checkpoint. Returns 0
    written, 1 the import cannot be done (named on stderr: the file and its first mismatching key, an existing
    ``--out``, no internet for DEFAULT); ``SystemExit(2)`` for a wrong command line."""
    args = import_torchvision_parser().parse_args(argv)
    try:
        out = import_torchvision(args.arch, args.weights, args.out, force=args.force)
    except ImportFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}: torchvision's {args.arch} as a detkit checkpoint (90 COCO classes)")
    return 0
