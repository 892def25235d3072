"""The generated settings reference of the docs site matches the code, and names every key of every group."""
import dataclasses
from pathlib import Path

from detkit.engine.reference import setting_groups, settings_reference
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.settings import Inference

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "settings.md"


def test_the_committed_page_is_what_the_code_generates():
    assert PAGE.read_text() == settings_reference(), "run: python tools/reference.py"


def test_every_group_key_and_default_is_on_the_page():
    page = settings_reference()
    groups = setting_groups()
    assert Inference in groups and len(groups) >= 8
    for group in groups:
        assert f"### {group.__name__}\n" in page
        for field in dataclasses.fields(group):
            assert f"| `{field.name}` |" in page
    for detector in (RetinaNet, FasterRCNN):
        assert f"`detkit.models.{detector.__name__}`" in page
    assert "| `model.detector.init_args.rpn` | Proposals |" in page
    assert "| `data.min_size` | 128 |" in page and "| `budget.minutes` |" in page
