"""Predict with a trained checkpoint: annotated images and a COCO results JSON, annotated videos and JSON lines.

    python tools/predict.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt \
        --images photos/ "more/*.jpg" one.png --videos clip.mp4 --out predictions \
        [--score-threshold 0.3] [--nms-threshold 0.5] [--class-agnostic] [--detections-per-image 20] \
        [--min-size 512] [--max-size 853] [--classes person car] [--device cpu] [--batch-size 8]

Writes ``OUT/<name>.png``, ``OUT/detections.json`` (COCO results) and ``OUT/images.json`` (image ids, classes) for
images, ``OUT/<name>.mp4`` and ``OUT/<name>.jsonl`` (one line per frame) for videos. Every setting not given is
the checkpoint's own. An unreadable image or video is reported and skipped; the others are predicted. Exit
status: 0 everything predicted, 1 some input unreadable (all others written) or the checkpoint unusable, 2 a
wrong command line. docs/guide/predict.md describes the options and outputs.
"""
import argparse
import sys

from detkit.inference import CheckpointError, expand_image_paths, load
from detkit.inference.overrides import PredictOptions
from detkit.inference.run import predict_files, summary
from detkit.inference.video import expand_video_paths, predict_videos, video_summary


def flag(option: str) -> str:
    """``detections_per_image`` -> ``--detections-per-image``: errors name the option as it was typed."""
    return "--" + option.replace("_", "-")


def parse_args(argv: list[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
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
    args = parser.parse_args(argv)
    if not args.images and not args.videos:
        parser.error("give --images, --videos or both")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    return parser, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    options = PredictOptions(args.score_threshold, args.nms_threshold, args.class_agnostic,
                             args.detections_per_image, args.min_size, args.max_size, args.classes)
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
    unreadable = False
    if images:
        run = predict_files(detector, images, args.out, options=options, batch_size=args.batch_size)
        print(summary(run, args.out))
        unreadable |= bool(run.unreadable)
    if videos:
        run = predict_videos(detector, videos, args.out, options=options, batch_size=args.batch_size)
        print(video_summary(run, args.out))
        unreadable |= bool(run.unreadable)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
