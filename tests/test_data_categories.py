"""CategoryMapping: sparse COCO ids <-> contiguous labels 0..K-1 (no background label)."""
import pytest
import torch

from detkit.data.categories import CategoryMapping

SPARSE = [{"id": 90, "name": "toothbrush"}, {"id": 1, "name": "person"}, {"id": 5, "name": "airplane"}]


def test_sorted_ids_become_contiguous_labels():
    mapping = CategoryMapping(SPARSE)
    assert mapping.num_classes == 3
    assert mapping.category_ids == [1, 5, 90]
    assert mapping.class_names == ["person", "airplane", "toothbrush"]
    assert [mapping.category_id_to_label(i) for i in (1, 5, 90)] == [0, 1, 2]


def test_round_trip_scalar_and_tensor():
    mapping = CategoryMapping(SPARSE)
    for label in range(3):
        assert mapping.category_id_to_label(mapping.label_to_category_id(label)) == label
    labels = torch.tensor([2, 0, 1, 2], dtype=torch.int64)
    ids = mapping.labels_to_category_ids(labels)
    assert ids.tolist() == [90, 1, 5, 90] and ids.dtype == torch.int64
    assert [mapping.category_id_to_label(i) for i in ids.tolist()] == labels.tolist()


def test_label_zero_is_an_object_class():
    # The convention: no background label, so label 0 is the smallest category id.
    assert CategoryMapping([{"id": 3, "name": "c"}, {"id": 2, "name": "b"}]).label_to_category_id(0) == 2


def test_to_coco_and_equality():
    mapping = CategoryMapping(SPARSE)
    assert mapping.to_coco() == [{"id": 1, "name": "person"}, {"id": 5, "name": "airplane"},
                                 {"id": 90, "name": "toothbrush"}]
    assert CategoryMapping(mapping.to_coco()) == mapping
    assert CategoryMapping(SPARSE[:2]) != mapping


@pytest.mark.parametrize("categories, message", [
    ([], "empty"),
    ([{"id": 1, "name": "a"}, {"id": 1, "name": "b"}], "category id 1 is duplicated"),
    ([{"name": "a"}], r"categories\[0\] must be a dict with 'id' and 'name'"),
    ([{"id": "1", "name": "a"}], "non-integer id '1'"),
])
def test_bad_categories_name_the_problem(categories, message):
    with pytest.raises(ValueError, match=message):
        CategoryMapping(categories, "x.json")


def test_unknown_id_and_label_out_of_range():
    mapping = CategoryMapping(SPARSE, "x.json")
    with pytest.raises(ValueError, match=r"x.json: category id 7 is not in categories \[1, 5, 90\]"):
        mapping.category_id_to_label(7)
    with pytest.raises(ValueError, match="label 3 is outside 0..2"):
        mapping.label_to_category_id(3)
    with pytest.raises(ValueError, match="label -1"):
        mapping.label_to_category_id(-1)
