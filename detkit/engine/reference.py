"""The settings reference of the docs site (``docs/reference/settings.md``), generated from the code itself: the
setting groups of both detectors with every key's type and default, and the keyword arguments of the model, data
and callback sections of a config. ``tools/reference.py`` writes it; a test checks the file is current.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing

from detkit.data import DetectionDataModule
from detkit.engine.anchor_check import AnchorCheck
from detkit.engine.budget import TimeBudget
from detkit.engine.callbacks import Throughput
from detkit.engine.module import DetectionModule
from detkit.engine.periodic_checkpoint import PeriodicCheckpoint
from detkit.models import FasterRCNN, RetinaNet
from detkit.models.settings import DETECTOR_KEY

DETECTORS = (RetinaNet, FasterRCNN)
SECTIONS = (("model", DetectionModule), ("data", DetectionDataModule), ("budget", TimeBudget),
            ("last_checkpoint", PeriodicCheckpoint), ("anchors", AnchorCheck), ("speed", Throughput))
HEADER = """# Settings reference

Every key a config can set, generated from the code (`python tools/reference.py`; a test fails when this page is
out of date). Any key can also be given on the command line, e.g.
`--model.detector.init_args.anchors.sizes auto` or `--data.batch_size 8`. Lightning's own sections (`trainer`,
`checkpoint`, `lr_monitor`) are Lightning's: `python tools/train.py --help` lists them.
"""


def settings_reference() -> str:
    """The whole page as Markdown."""
    parts = [HEADER, "## The detectors: `model.detector`\n"]
    parts += [_detector_section(detector) for detector in DETECTORS]
    parts.append("## The setting groups\n")
    parts += [_group_section(group) for group in setting_groups()]
    parts += [_class_section(key, cls) for key, cls in SECTIONS]
    return "\n".join(parts).rstrip() + "\n"


def setting_groups() -> list[type]:
    """Every setting-group dataclass the detectors take, nested ones included, in first-use order."""
    found: list[type] = []

    def visit(cls: type) -> None:
        if cls not in found:
            found.append(cls)
            for field in dataclasses.fields(cls):
                if dataclasses.is_dataclass(field.default):
                    visit(type(field.default))

    for detector in DETECTORS:
        for parameter in inspect.signature(detector).parameters.values():
            if dataclasses.is_dataclass(parameter.default):
                visit(type(parameter.default))
    return found


def _detector_section(detector: type) -> str:
    rows = [f"### `{detector.__module__.rsplit('.', 1)[0]}.{detector.__name__}`\n", _summary(detector), "",
            "| key | group | default |", "|---|---|---|"]
    for name, parameter in inspect.signature(detector).parameters.items():
        default = parameter.default
        group = type(default).__name__ if dataclasses.is_dataclass(default) else _type_name(parameter.annotation)
        value = _flat(default) if dataclasses.is_dataclass(default) else _value(default)
        rows.append(f"| `{DETECTOR_KEY}.{name}` | {group} | {value} |")
    return "\n".join(rows) + "\n"


def _group_section(group: type) -> str:
    described = _documented_args(group)
    rows = [f"### {group.__name__}\n", _summary(group), "", "| key | type | default | meaning |", "|---|---|---|---|"]
    hints = typing.get_type_hints(group)
    for field in dataclasses.fields(group):
        rows.append(f"| `{field.name}` | {_type_name(hints[field.name])} | {_value(field.default)} | "
                    f"{described.get(field.name, '')} |")
    return "\n".join(rows) + "\n"


def _class_section(key: str, cls: type) -> str:
    described = _documented_args(cls)
    rows = [f"## `{key}`: `{cls.__module__}.{cls.__name__}`\n", _summary(cls), "", "| key | default | meaning |",
            "|---|---|---|"]
    for name, parameter in inspect.signature(cls).parameters.items():
        if name in ("self", "detector", "args", "kwargs"):
            continue
        default = "required" if parameter.default is inspect.Parameter.empty else _value(parameter.default)
        rows.append(f"| `{key}.{name}` | {default} | {described.get(name, '')} |")
    return "\n".join(rows) + "\n"


def _summary(cls: type) -> str:
    """The first paragraph of a class docstring, on one line, in Markdown."""
    return _markdown(" ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split()))


def _markdown(text: str) -> str:
    """Docstring text as a Markdown table cell: ``code`` -> `code`, pipes escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def _documented_args(cls: type) -> dict[str, str]:
    """name -> description from the ``Args:`` section of a class docstring ("a, b: text" documents both)."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    if "Args:" not in doc:
        return {}
    section = doc.split("Args:", 1)[1].split("\n\n")[0]
    described: dict[str, str] = {}
    for entry in re.split(r"\n(?=\S)", inspect.cleandoc(section)):
        names, _, text = entry.partition(":")
        for name in re.split(r"[,/ ]+", names.strip()):
            if name.isidentifier():
                described[name] = _markdown(" ".join(text.split()))
    return described


def _flat(group) -> str:
    """A group instance as ``key=value`` pairs, nested groups inline."""
    values = []
    for field in dataclasses.fields(group):
        value = getattr(group, field.name)
        values.append(f"{field.name}=({_flat(value)})" if dataclasses.is_dataclass(value)
                      else f"{field.name}={_value(value)}")
    return ", ".join(values)


def _value(value) -> str:
    if dataclasses.is_dataclass(value):
        return f"{type(value).__name__}({_flat(value)})"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if value is inspect.Parameter.empty:
        return "required"
    return "null" if value is None else str(value).replace("|", "\\|")


def _type_name(annotation) -> str:
    if isinstance(annotation, type):
        return annotation.__name__
    text = str(annotation).replace("typing.", "").replace("NoneType", "None")
    return text.replace("|", "\\|")
