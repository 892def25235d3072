"""Predict with a trained checkpoint: one annotated image per input and a COCO results JSON of all detections.

    python tools/predict.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt \
        --images photos/ "more/*.jpg" one.png --out predictions [--score 0.3] [--device cpu] [--batch-size 8]

Writes ``OUT/<name>.png``, ``OUT/detections.json`` (COCO results) and ``OUT/images.json`` (image ids, classes).
An unreadable image is reported and skipped; the others are predicted. Exit status: 0 every image predicted,
1 some image unreadable (all others written) or the checkpoint unusable, 2 a wrong command line.
"""
import argparse
import sys

from detkit.inference import CheckpointError, expand_image_paths, load
from detkit.inference.run import predict_files, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by training")
    parser.add_argument("--images", required=True, nargs="+", help="image files, folders or glob patterns")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--score", type=float, default=0.3, help="keep detections scoring at least this")
    parser.add_argument("--config", help="build the model from this YAML instead of the checkpoint's config")
    parser.add_argument("--device", help="cpu, cuda, cuda:1... (default: CUDA when available)")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    if not 0.0 <= args.score <= 1.0 or args.batch_size < 1:
        parser.error(f"--score must lie in [0, 1] and --batch-size be >= 1, got {args.score} and {args.batch_size}")
    try:
        paths = expand_image_paths(args.images)
    except ValueError as error:
        parser.error(str(error))
    try:
        detector = load(args.checkpoint, config=args.config, device=args.device)
    except CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    run = predict_files(detector, paths, args.out, score_threshold=args.score, batch_size=args.batch_size)
    print(summary(run, args.out))
    return 1 if run.unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
