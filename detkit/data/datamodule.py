"""``DetectionDataModule``: COCO-format train/val datasets, transforms and loaders, configured from YAML."""
from __future__ import annotations

import os
import random
from typing import Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, DistributedSampler

from detkit.data.categories import CategoryMapping
from detkit.data.coco import CocoDetection, read_coco_json
from detkit.data.collate import make_collate_fn, padded_size
from detkit.data.resumable import ResumableLoader
from detkit.data.shapes import SHAPES_CATEGORIES, generate_shapes
from detkit.data.split_checks import check_split_paths, check_train_split, check_val_split
from detkit.data.transforms import build_transforms, check_resize_mode, padding_fill, resized_size

AUTO = "auto"
BUILTIN_DATASETS = {"shapes": (generate_shapes, SHAPES_CATEGORIES)}


def evenly_spread(total: int, count: int | None) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included; all of them when
    ``count`` is None or at least ``total``."""
    if count is None or count >= total:
        return list(range(total))
    return np.linspace(0, total - 1, count).round().astype(int).tolist()


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy, random and the dataset's augmentation from the worker's torch seed.

    PyTorch gives each worker ``base_seed + worker_id`` with ``base_seed`` drawn from the loader's generator,
    so a seeded generator makes every worker's augmentations reproducible, and distinct across workers and epochs.
    """
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    info = torch.utils.data.get_worker_info()
    transforms = getattr(info.dataset, "transforms", None) if info is not None else None
    if hasattr(transforms, "reseed"):
        transforms.reseed(seed)


class DetectionDataModule(L.LightningDataModule):
    """Train/val COCO-format datasets and their loaders.

    Args:
        train_images, val_images: image folders that the JSON ``file_name`` entries are relative to.
        train_annotations, val_annotations: COCO instances JSON files (their categories must be identical).
        batch_size: training images per batch (per process under DDP).
        val_batch_size: validation batch size; defaults to ``batch_size``.
        num_workers: DataLoader worker processes (0 loads in the main process).
        seed: seeds the train shuffling, the augmentation and the workers: a given seed gives the same batches.
        min_size, max_size: aspect-preserving resize, shorter side to ``min_size``, longer capped at ``max_size``;
            "auto" in a config: chosen from the training boxes (``detkit.data.sizing``) before this is built.
        size_divisor: padded batch sides are multiples of this (the model's largest stride; "auto": that stride).
        resize: "cv2" (detkit's resize) or "torchvision" (``GeneralizedRCNNTransform``'s exactly, padding
            included: for models imported from torchvision, ``detkit.data.transforms``).
        train_augmentations: albumentations specs such as ``[{"type": "HorizontalFlip", "p": 0.5}]``.
        augmentation_strength: in [0, 1]: every augmentation's p but the flips' and right-angle turns' is scaled
            by it (0: flips only); "auto": set once from the run's epochs, at the time budget's first plan after
            the first epoch (1 until then), or at the start of a run without a budget (the rule:
            ``detkit.engine.optim.augmentation_strength_for``).
        drop_empty: leave training images without objects out (validation always keeps them).
        skip_bad_images: skip missing/unreadable images with a warning instead of failing.
        cache_images: keep decoded images in memory (worth it for small datasets like the built-in one).
        builtin: "shapes" generates the built-in dataset (seed 0) in ``prepare_data`` when the files are missing; the
            four paths must then be ``<dir>/images`` and ``<dir>/instances_{train,val}.json``.
    """

    def __init__(
        self,
        train_images: str,
        train_annotations: str,
        val_images: str,
        val_annotations: str,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        min_size: int | Literal["auto"] = 128,
        max_size: int | Literal["auto"] = 128,
        size_divisor: int | Literal["auto"] = 32,
        resize: str = "cv2",
        train_augmentations: list[dict] | None = None,
        augmentation_strength: float | Literal["auto"] = 1.0,
        drop_empty: bool = False,
        skip_bad_images: bool = False,
        cache_images: bool = False,
        builtin: str | None = None,
    ):
        super().__init__()
        if builtin is not None and builtin not in BUILTIN_DATASETS:
            raise ValueError(f"data.builtin must be one of {sorted(BUILTIN_DATASETS)} or null, got {builtin!r}")
        auto = [f"data.{key}" for key, value in (("min_size", min_size), ("max_size", max_size),
                                                 ("size_divisor", size_divisor)) if value == AUTO]
        if auto:
            raise ValueError(f"{', '.join(auto)}: 'auto' is chosen from the training boxes before the data module is "
                             "built (tools/train.py does it; from Python: detkit.engine.sizing.resolve_auto_sizing)")
        for key, value in (("batch_size", batch_size), ("val_batch_size", val_batch_size or 1),
                           ("min_size", min_size), ("max_size", max_size), ("size_divisor", size_divisor)):
            if value < 1:
                raise ValueError(f"data.{key} must be >= 1, got {value}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if augmentation_strength != AUTO and (isinstance(augmentation_strength, str)
                                              or not 0 <= augmentation_strength <= 1):
            raise ValueError(f"data.augmentation_strength must be in [0, 1] or 'auto', got {augmentation_strength!r}")
        check_resize_mode(resize, "data.resize")
        self.save_hyperparameters()
        self.train_images, self.train_annotations = train_images, train_annotations
        self.val_images, self.val_annotations = val_images, val_annotations
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.min_size, self.max_size, self.size_divisor, self.resize = min_size, max_size, size_divisor, resize
        self.train_augmentations = train_augmentations
        self.augmentation_strength = augmentation_strength
        self.planned_strength: float | None = None  # "auto": set by plan_augmentation
        self.drop_empty, self.skip_bad_images, self.cache_images = drop_empty, skip_bad_images, cache_images
        self.builtin = builtin
        # Validate the specs now: a typo in the config fails at start-up, not in the first epoch.
        build_transforms(True, min_size, max_size, train_augmentations)
        self.train_dataset: CocoDetection | None = None
        self._val_dataset: CocoDetection | None = None
        self._categories: CategoryMapping | None = None
        self._train_generator: torch.Generator | None = None

    # -- data on disk -----------------------------------------------------------------------------------

    def _builtin_dir(self) -> str:
        """The folder the built-in dataset goes to; ValueError naming the keys if the paths disagree."""
        root = os.path.dirname(self.train_annotations)
        expected = {
            "train_images": os.path.join(root, "images"), "val_images": os.path.join(root, "images"),
            "train_annotations": os.path.join(root, "instances_train.json"),
            "val_annotations": os.path.join(root, "instances_val.json"),
        }
        wrong = [f"data.{key}={getattr(self, key)!r} (expected {path!r})" for key, path in expected.items()
                 if os.path.normpath(getattr(self, key)) != os.path.normpath(path)]
        if wrong:
            raise ValueError(f"data.builtin={self.builtin!r} writes <dir>/images and "
                             f"<dir>/instances_{{train,val}}.json; these keys do not match: " + "; ".join(wrong))
        return root

    def _files_present(self) -> bool:
        return (os.path.isfile(self.train_annotations) and os.path.isfile(self.val_annotations)
                and os.path.isdir(self.train_images) and os.path.isdir(self.val_images))

    def prepare_data(self) -> None:
        """Generate the built-in dataset if ``builtin`` is set and its files are missing (rank 0 only)."""
        if self.builtin is None or self._files_present():
            return
        generate, _ = BUILTIN_DATASETS[self.builtin]
        generate(self._builtin_dir(), seed=0)

    # -- categories (available before setup: the model needs num_classes at construction) ----------------

    @property
    def categories(self) -> CategoryMapping:
        """The dataset's ``CategoryMapping``, read from the val JSON (train must match; checked in setup)."""
        if self._categories is None:
            if self._val_dataset is not None:
                self._categories = self._val_dataset.categories
            elif os.path.isfile(self.val_annotations):
                categories = read_coco_json(self.val_annotations)["categories"]
                self._categories = CategoryMapping(categories, self.val_annotations)
            elif self.builtin is not None:
                self._categories = CategoryMapping(BUILTIN_DATASETS[self.builtin][1], f"builtin {self.builtin}")
            else:
                raise FileNotFoundError(f"data.val_annotations: {self.val_annotations} does not exist")
        return self._categories

    @property
    def num_classes(self) -> int:
        """K, the number of object classes (labels 0..K-1, no background)."""
        return self.categories.num_classes

    @property
    def class_names(self) -> list[str]:
        """Class names indexed by label."""
        return self.categories.class_names

    @property
    def category_ids(self) -> list[int]:
        """COCO category ids indexed by label."""
        return self.categories.category_ids

    # -- datasets and loaders ---------------------------------------------------------------------------

    @property
    def val_dataset(self) -> CocoDetection:
        """The validation dataset (built on first use); its ``.coco`` is the evaluation ground truth."""
        if self._val_dataset is None:
            check_split_paths("val", self.val_images, self.val_annotations)
            self._val_dataset = CocoDetection(
                self.val_images, self.val_annotations,
                transforms=build_transforms(False, self.min_size, self.max_size, resize=self.resize),
                skip_bad_images=self.skip_bad_images, cache_images=self.cache_images)
            self._check_same_categories(self._val_dataset, "data.val_annotations")
            check_val_split(self._val_dataset)
        return self._val_dataset

    def _check_same_categories(self, dataset: CocoDetection, key: str) -> None:
        if self._categories is not None and dataset.categories != self._categories:
            raise ValueError(f"{key}: categories of {dataset.annotation_file} ({dataset.categories}) differ from "
                             f"{self._categories.source} ({self._categories}); train and val must share them")
        self._categories = dataset.categories

    def setup(self, stage: str | None = None) -> None:
        """Build the train dataset for ``fit`` and the val dataset for every stage."""
        if stage in (None, "fit") and self.train_dataset is None:
            check_split_paths("train", self.train_images, self.train_annotations)
            self.train_dataset = CocoDetection(
                self.train_images, self.train_annotations,
                transforms=build_transforms(True, self.min_size, self.max_size, self.train_augmentations,
                                            seed=self.seed, resize=self.resize),
                drop_empty=self.drop_empty, skip_bad_images=self.skip_bad_images, cache_images=self.cache_images)
            if self.augmentation_strength != AUTO:
                self.train_dataset.transforms.set_strength(float(self.augmentation_strength))
            self._check_same_categories(self.train_dataset, "data.train_annotations")
            check_train_split(self.train_dataset, self.drop_empty, self.skip_bad_images)
            self._train_generator = torch.Generator().manual_seed(self.seed)
        self.val_dataset  # noqa: B018 - builds it and checks its categories

    def dataset(self, split: str) -> CocoDetection:
        """The "train" dataset (augmented, built by ``setup("fit")`` if needed) or the "val" one (resized only)."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if split == "val":
            return self.val_dataset
        if self.train_dataset is None:
            self.setup("fit")
        return self.train_dataset

    def input_boxes(self, max_images: int | None = None, split: str = "train"
                    ) -> tuple[list[tuple[int, int]], list[torch.Tensor], list[torch.Tensor]]:
        """The split's boxes as the model sees them without augmentation (after the resize), from the JSON alone.

        Returns per image (at most ``max_images``, evenly spread over the split): the padded input size (h, w),
        boxes (M, 4) float32 xyxy input pixels and labels (M,) int64. For anchor fitting, coverage and statistics.
        """
        all_items = self.dataset(split).original_targets()
        items = [all_items[i] for i in evenly_spread(len(all_items), max_images)]
        sizes, boxes, labels = [], [], []
        for (height, width), image_boxes, image_labels in items:
            new_height, new_width = resized_size(height, width, self.min_size, self.max_size, self.resize)
            scale = np.array([new_width / width, new_height / height] * 2, dtype=np.float32)
            sizes.append(padded_size(new_height, new_width, self.size_divisor))
            boxes.append(torch.from_numpy(image_boxes * scale).reshape(-1, 4))
            labels.append(torch.from_numpy(image_labels).reshape(-1))
        return sizes, boxes, labels

    def _loader(self, dataset: CocoDetection, batch_size: int, loader=DataLoader, persistent: bool = True, **kwargs):
        return loader(
            dataset, batch_size=batch_size, num_workers=self.num_workers,
            collate_fn=make_collate_fn(self.size_divisor, padding_fill(self.resize)),
            worker_init_fn=seed_worker, persistent_workers=persistent and self.num_workers > 0,
            pin_memory=torch.cuda.is_available(), **kwargs)

    def train_dataloader(self) -> ResumableLoader:
        """Shuffled by a ``DistributedSampler`` seeded with ``seed`` over this process's share (all of it in one
        process): the order depends on (seed, epoch) only, and a resumed run continues it mid-epoch."""
        if self.train_dataset is None:
            self.setup("fit")
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(self.train_dataset, num_replicas=world_size, rank=rank, shuffle=True,
                                     seed=self.seed)
        # a planned "auto" strength reaches the workers only if they start again at every epoch with the dataset
        return self._loader(self.train_dataset, self.batch_size, ResumableLoader, sampler=sampler,
                            generator=self._train_generator, persistent=self.augmentation_strength != AUTO)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order."""
        return self._loader(self.val_dataset, self.val_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """The val split (COCO's test-dev has no public annotations)."""
        return self.val_dataloader()

    def plan_augmentation(self, strength: float) -> float:
        """With ``augmentation_strength`` "auto": set ``strength`` the first time only (the step time it was chosen
        from would change with it). Returns the strength in use."""
        if self.augmentation_strength != AUTO:
            return float(self.augmentation_strength)
        if self.planned_strength is None:
            self.planned_strength = float(strength)
            self.dataset("train").transforms.set_strength(self.planned_strength)
        return self.planned_strength

    # -- resuming: the random state of the main process's augmentation and worker seeds -------------------

    def state_dict(self) -> dict:
        if self.train_dataset is None:
            return {}
        return {"augmentation": self.train_dataset.transforms.random_state(),
                "worker_seed_generator": self._train_generator.get_state(),
                "augmentation_strength": self.planned_strength}

    def load_state_dict(self, state_dict: dict) -> None:
        fitting = self.trainer is None or self.trainer.state.fn == TrainerFn.FITTING
        if not state_dict or not fitting:  # evaluation draws nothing at random
            return
        if self.train_dataset is None:
            self.setup("fit")
        self.train_dataset.transforms.set_random_state(state_dict["augmentation"])
        self._train_generator.set_state(state_dict["worker_seed_generator"])
        if state_dict.get("augmentation_strength") is not None and self.augmentation_strength == AUTO:
            self.planned_strength = state_dict["augmentation_strength"]
            self.train_dataset.transforms.set_strength(self.planned_strength)
