"""Command-line options that point a config at the ``shapes_root`` fixture's dataset."""
from pathlib import Path


def data_args(root: Path) -> list[str]:
    """The four ``--data.*`` path options for the shapes dataset under ``root``."""
    return ["--data.train_images", str(root / "images"), "--data.train_annotations", str(root / "instances_train.json"),
            "--data.val_images", str(root / "images"), "--data.val_annotations", str(root / "instances_val.json")]
