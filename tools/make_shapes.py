"""Write the built-in shapes dataset (COCO format) to a folder.

    python tools/make_shapes.py --out data/shapes [--seed 0 --num-train 2000 --num-val 500 --image-size 128]
"""
import argparse
import time

from detkit.data.shapes import generate_shapes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/shapes", help="output folder (images/ + instances_{train,val}.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-val", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: up to 2 CPUs)")
    args = parser.parse_args()
    start = time.perf_counter()
    paths = generate_shapes(args.out, args.num_train, args.num_val, args.image_size, args.seed, args.workers)
    print(f"wrote {args.num_train} train + {args.num_val} val images to {args.out} in "
          f"{time.perf_counter() - start:.1f} s: {paths['train']}, {paths['val']}")


if __name__ == "__main__":
    main()
