"""Predict with a trained checkpoint: annotated images and a COCO results JSON, annotated videos and JSON lines.

``predict_command`` is ``tools/predict.py``: it checks the options, loads the checkpoint, predicts the images
(``detkit.inference.run``) and the videos (``detkit.inference.video``) and prints their summaries. Exit status: 0
everything predicted, 1 some input unreadable (all others written) or the checkpoint unusable, 2 a wrong command
line (argparse's ``SystemExit(2)``, raised before anything is written). docs/guide/predict.md describes the options
and outputs.
"""
from __future__ import annotations

import argparse
import sys

from detkit.inference.checkpoint import CheckpointError
from detkit.inference.images import expand_image_paths
from detkit.inference.overrides import PredictOptions
from detkit.inference.predictor import Detector, load
from detkit.inference.run import predict_files, summary
from detkit.inference.video import expand_video_paths, predict_videos, video_summary


def flag(option: str) -> str:
    """``detections_per_image`` -> ``--detections-per-image``: errors name the option as it was typed."""
    return "--" + option.replace("_", "-")


def predict_parser() -> argparse.ArgumentParser:
    """The options of ``predict_command``; the settings group defaults to None: the checkpoint's own."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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
