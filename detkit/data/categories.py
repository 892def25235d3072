"""The label convention of detkit, stated once, and the COCO category id <-> label mapping.

LABEL CONVENTION (every dataset, model, loss and evaluator in detkit follows it):

- Training labels are contiguous int64 values ``0 .. K-1``, one per object class, for the K categories
  of the dataset. Label ``l`` is the ``l``-th COCO category id in ascending order, so sparse ids
  (COCO 2017 uses 1..90 with gaps) become dense labels and map back exactly for evaluation.
- There is NO background label in targets: label 0 is the first object class, not background.
  An image without objects simply has zero boxes. A model that needs a background class (the
  Faster R-CNN box classifier) appends it internally as column ``K``; it never appears in data.
- Crowd annotations (``iscrowd=1``) are not training targets; they stay in the ground truth so COCO
  evaluation ignores detections on them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


class CategoryMapping:
    """Maps COCO category ids (any positive ints, possibly sparse) to labels ``0..K-1`` and back.

    Args:
        categories: the COCO ``categories`` list: dicts with an int ``id`` and a str ``name``.
        source: where the list came from (a file name), used in error messages.

    Attributes:
        num_classes: K, the number of object classes (no background).
        category_ids: list of K category ids indexed by label (ascending ids).
        class_names: list of K names indexed by label.
    """

    def __init__(self, categories: Sequence[dict], source: str = "categories"):
        if not categories:
            raise ValueError(f"{source}: 'categories' is empty; at least one category is needed")
        by_id: dict[int, str] = {}
        for index, category in enumerate(categories):
            if not isinstance(category, dict) or "id" not in category or "name" not in category:
                raise ValueError(f"{source}: categories[{index}] must be a dict with 'id' and 'name', got {category!r}")
            category_id = category["id"]
            if isinstance(category_id, bool) or not isinstance(category_id, int):
                raise ValueError(f"{source}: categories[{index}] has a non-integer id {category_id!r}")
            if category_id in by_id:
                raise ValueError(f"{source}: category id {category_id} is duplicated "
                                 f"({by_id[category_id]!r} and {category['name']!r})")
            by_id[category_id] = str(category["name"])
        self.category_ids: list[int] = sorted(by_id)
        self.class_names: list[str] = [by_id[i] for i in self.category_ids]
        self._label_of_id = {category_id: label for label, category_id in enumerate(self.category_ids)}
        self.source = source

    @property
    def num_classes(self) -> int:
        """K, the number of object classes; labels are ``0..K-1``."""
        return len(self.category_ids)

    def category_id_to_label(self, category_id: int) -> int:
        """The label (0..K-1) of a COCO category id; ValueError naming the id if it is unknown."""
        try:
            return self._label_of_id[int(category_id)]
        except KeyError:
            raise ValueError(f"{self.source}: category id {category_id} is not in categories "
                             f"{self.category_ids}") from None

    def label_to_category_id(self, label: int) -> int:
        """The COCO category id of a label (0..K-1); ValueError if out of range."""
        if not 0 <= int(label) < self.num_classes:
            raise ValueError(f"label {label} is outside 0..{self.num_classes - 1}")
        return self.category_ids[int(label)]

    def labels_to_category_ids(self, labels: torch.Tensor) -> torch.Tensor:
        """labels (N,) int64 in 0..K-1 -> category ids (N,) int64 (vectorised, for evaluation)."""
        lookup = torch.tensor(self.category_ids, dtype=torch.int64, device=labels.device)
        return lookup[labels.long()]

    def to_coco(self) -> list[dict]:
        """The categories as a COCO ``categories`` list, ordered by label."""
        return [{"id": i, "name": n} for i, n in zip(self.category_ids, self.class_names)]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CategoryMapping) and self.category_ids == other.category_ids
                and self.class_names == other.class_names)

    def __repr__(self) -> str:
        pairs = ", ".join(f"{label}:{cid}:{name}" for label, (cid, name)
                          in enumerate(zip(self.category_ids, self.class_names)))
        return f"CategoryMapping(label:id:name = {pairs})"
