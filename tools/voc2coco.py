"""Convert a Pascal VOC split (Annotations/*.xml + ImageSets/Main/<split>.txt) to a COCO instances JSON.

    python tools/voc2coco.py --root VOCdevkit/VOC2012 --split train --out VOCdevkit/VOC2012/instances_train.json
    python tools/voc2coco.py --root my_labelimg_export --split all --classes cat,dog --out instances_all.json

Then point ``data.train_images`` at ``<root>/JPEGImages`` and ``data.train_annotations`` at the JSON.
VOC corners are 1-based inclusive pixel indices: x = xmin - 1, w = xmax - xmin + 1 (same for y).
"difficult" objects become crowd regions by default (not trained on, ignored by COCO evaluation, as VOC
evaluation ignores them); ``--difficult keep`` trains on them, ``--difficult drop`` removes them.
Image ids are 1..N in split order; category ids are 1..K in class order.
"""
import argparse
import os

from detkit.data.voc import write_voc_as_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="VOC folder with Annotations/, JPEGImages/, ImageSets/Main/")
    parser.add_argument("--split", default="trainval", help="ImageSets/Main/<split>.txt, or 'all'")
    parser.add_argument("--out", required=True, help="output COCO JSON")
    parser.add_argument("--classes", default=None, help="comma-separated class names in label order")
    parser.add_argument("--difficult", default="crowd", choices=("crowd", "keep", "drop"))
    args = parser.parse_args()
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    data = write_voc_as_coco(args.root, args.split, args.out, classes, args.difficult)
    print(f"wrote {args.out}: {len(data['images'])} images, {len(data['annotations'])} boxes, "
          f"{len(data['categories'])} classes; images are in {os.path.join(args.root, 'JPEGImages')}")


if __name__ == "__main__":
    main()
