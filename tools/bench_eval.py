"""Time COCO evaluation with each backend on generated data: pycocotools (the reference), faster-coco-eval, hotcoco.

    python tools/bench_eval.py [--images 5000] [--detections 100] [--classes 10] [--quick]

Every backend evaluates the same detections through ``CocoEvaluator.compute`` (results conversion, loadRes,
evaluate, accumulate, summarize: what every validation pays, less the results JSON). Prints one row per backend:
seconds, AP, AP50, and the largest difference from pycocotools over the 12 numbers and over the per-class
AP / AP50. The data and the timing: ``detkit.benchmarks.eval``.
"""
import argparse

from detkit.benchmarks.eval import format_table, run_eval_benchmark

QUICK = (100, 20)  # images, detections per image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="100 images x 20 detections, for a test")
    args = parser.parse_args()
    images, detections = QUICK if args.quick else (args.images, args.detections)
    print(format_table(run_eval_benchmark(images, detections, args.classes)))


if __name__ == "__main__":
    main()
