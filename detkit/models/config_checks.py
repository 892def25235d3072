"""Construction-time checks of a detector's settings, with errors naming the key as a config spells it.

A value out of range would otherwise pass silently (an NMS IoU above 1 suppresses nothing) or fail deep inside
the first step; the detectors call these before building anything.
"""
from __future__ import annotations

DETECTOR_KEY = "model.detector.init_args"


def detector_key(name: str) -> str:
    """The config key of the detector argument ``name``, e.g. ``model.detector.init_args.nms_threshold``."""
    return f"{DETECTOR_KEY}.{name}"


def check_unit_interval(**values: float) -> None:
    """Every value lies in [0, 1] (IoU thresholds, score thresholds, fractions); ValueError naming the key."""
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{detector_key(name)} must lie in [0, 1], got {value}")


def check_at_least_one(**values: int) -> None:
    """Every value is >= 1 (counts of detections, candidates, samples); ValueError naming the key."""
    for name, value in values.items():
        if value < 1:
            raise ValueError(f"{detector_key(name)} must be >= 1, got {value}")


def check_iou_thresholds(fg_name: str, fg: float, bg_name: str, bg: float) -> None:
    """Matcher thresholds: both in [0, 1] and fg >= bg (IoU >= fg is positive, < bg background, between ignored)."""
    check_unit_interval(**{fg_name: fg, bg_name: bg})
    if fg < bg:
        raise ValueError(f"{detector_key(fg_name)} ({fg}) must be >= {detector_key(bg_name)} ({bg}): anchors with "
                         f"IoU >= {fg_name} are positive, those below {bg_name} background")
