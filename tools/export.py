"""Export a trained checkpoint to ONNX, pre- and post-processing included, checked against PyTorch.

    python tools/export.py --checkpoint runs/retinanet_shapes/version_0/checkpoints/best.ckpt --out model.onnx \
        [--check-images a.png b.jpg] [--bench 20]

The model takes ``image`` (3, H, W) float32 RGB in [0, 1] of any size and returns ``boxes`` (D, 4) xyxy in its
pixels, ``scores`` (D,) and ``labels`` (D,) int64 (docs/guide/export.md). Exit status: 0 written and checked,
1 the checkpoint unusable or onnxruntime's detections differ from PyTorch's (nothing written), 2 a wrong command line.
"""
import argparse
import sys

from detkit.inference import CheckpointError, expand_image_paths, load
from detkit.inference.export import OnnxExportError, export_onnx
from detkit.inference.onnx_check import check_images
from detkit.inference.onnx_speed import compare_speed, speed_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a .ckpt written by training")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--check-images", nargs="+", metavar="IMAGE",
                        help="images (files, folders, globs) of the parity check; default: three synthetic ones")
    parser.add_argument("--bench", type=int, default=0, metavar="N",
                        help="also time N passes over the check images with PyTorch and with onnxruntime")
    args = parser.parse_args(argv)
    if args.bench < 0:
        parser.error(f"--bench must be >= 0, got {args.bench}")
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
    for parity in report.parity:
        height, width = parity.size
        print(f"{width}x{height}: {parity.onnx_count} detections, max box difference "
              f"{parity.max_box_difference:.2e} px, max score difference {parity.max_score_difference:.2e}")
    print(f"wrote {report.path} (opset {report.opset}, classes {report.metadata['class_names']})")
    if args.bench:
        print(speed_table(compare_speed(detector, report.path, images, repeats=args.bench)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
