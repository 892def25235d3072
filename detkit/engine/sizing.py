"""Resolve a config's "auto" input size and pyramid levels from the training boxes, before anything is built.

``data.min_size``, ``data.max_size``, ``data.size_divisor`` and the detector's ``fpn.min_level`` /
``fpn.extra_levels`` may be "auto" (``configs/*_custom.yaml``); each one set to a number keeps that number. The
resolved values go into the config itself, so ``config.yaml``, every checkpoint's embedded config and
``detkit.load`` hold the numbers the run trained with. The rules: ``detkit.data.sizing``.
"""
from __future__ import annotations

from detkit.data.sizing import (
    COARSEST_BACKBONE_LEVEL,
    BoxStatistics,
    choose_input_size,
    choose_levels,
    class_balanced_quantile,
)
from detkit.engine.anchor_check import print_once
from detkit.models.settings import DETECTOR_KEY

AUTO = "auto"
INPUT_KEYS = ("data.min_size", "data.max_size")
LEVEL_KEYS = (f"{DETECTOR_KEY}.fpn.min_level", f"{DETECTOR_KEY}.fpn.extra_levels")
DIVISOR_KEY = "data.size_divisor"


def _get(config, key: str):
    try:
        return config[key]
    except (KeyError, TypeError):
        return None


def resolve_auto_sizing(config) -> dict[str, int]:
    """Replace the "auto" values among ``INPUT_KEYS``, ``LEVEL_KEYS`` and ``DIVISOR_KEY`` of ``config`` (a
    jsonargparse Namespace indexed by dotted keys, as LightningCLI parses it) with the choices for the training
    boxes of ``data.train_annotations``, print them, and return {key: value} of what was resolved."""
    keys = [key for key in (*INPUT_KEYS, *LEVEL_KEYS, DIVISOR_KEY) if _get(config, key) == AUTO]
    if not keys:
        return {}
    annotations = config["data.train_annotations"]
    stats = BoxStatistics.from_coco(annotations)
    chosen_size = choose_input_size(stats)
    min_size, max_size = (chosen_size[i] if config[key] == AUTO else int(config[key])
                          for i, key in enumerate(INPUT_KEYS))
    chosen_levels = choose_levels(stats, min_size, max_size)
    levels = {key: (chosen_levels[i] if _get(config, key) == AUTO else _get(config, key))
              for i, key in enumerate(LEVEL_KEYS)}
    resolved = {INPUT_KEYS[0]: min_size, INPUT_KEYS[1]: max_size, **levels}
    if _get(config, DIVISOR_KEY) == AUTO:
        extra = levels[LEVEL_KEYS[1]]
        resolved[DIVISOR_KEY] = 2 ** (COARSEST_BACKBONE_LEVEL + (extra if isinstance(extra, int) else 0))
    resolved = {key: value for key, value in resolved.items() if key in keys}
    for key, value in resolved.items():
        config[key] = value
    print_once(describe(stats, annotations, min_size, max_size, levels, resolved))
    return resolved


def describe(stats: BoxStatistics, annotations: str, min_size: int, max_size: int, levels: dict,
             resolved: dict[str, int]) -> str:
    """The printed account of the choices: the object sizes they rest on and the values set."""
    sides = stats.input_sides(min_size, max_size)
    quantiles = [class_balanced_quantile(sides, stats.labels, q) for q in (0.02, 0.1, 0.5, 0.98)]
    min_level, extra = levels[LEVEL_KEYS[0]], levels[LEVEL_KEYS[1]]
    pyramid = (f"P{min_level}-P{COARSEST_BACKBONE_LEVEL + extra}" if isinstance(min_level, int)
               and isinstance(extra, int) else "as configured")
    sizes = ", ".join(f"{q:.0f}" for q in quantiles)
    values = ", ".join(f"{key.removeprefix(DETECTOR_KEY + '.')}={value}" for key, value in resolved.items())
    return (f"sized to {len(stats.sides)} training boxes of {annotations}: input {min_size}-{max_size} px, pyramid "
            f"{pyramid}; boxes at that size (class-balanced 2/10/50/98%): {sizes} px. Set: {values} "
            "(kept in config.yaml and the checkpoints; set a key to a number to override it)")
