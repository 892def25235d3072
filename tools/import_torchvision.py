"""Import one of torchvision's six COCO detectors into a detkit checkpoint (docs/guide/pretrained.md).

    python tools/import_torchvision.py --arch fasterrcnn_mobilenet_v3_large_320_fpn \
        --weights fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth --out mobilenet_320_coco.ckpt [--force]

The checkpoint then works as any other: detkit.load(...).predict, tools/predict.py, tools/eval.py, and
--model.init_from to fine-tune (configs/*_finetune.yaml). --weights DEFAULT asks torchvision to download the
published file (needs internet). Exit status 1 on a bad file (named, with the first mismatching key).
"""
import argparse
import sys

from detkit.inference.import_torchvision import ARCHITECTURES, ImportFailed, import_torchvision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", required=True, choices=list(ARCHITECTURES), help="torchvision's builder name")
    parser.add_argument("--weights", required=True, help="the state dict file, or DEFAULT to download it")
    parser.add_argument("--out", required=True, help="the .ckpt to write")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        out = import_torchvision(args.arch, args.weights, args.out, force=args.force)
    except ImportFailed as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {out}: torchvision's {args.arch} as a detkit checkpoint (90 COCO classes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
