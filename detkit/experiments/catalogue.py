"""The studies in words, for ``tools/experiment.py``: each one's default budgets, and which budget options a study
accepts (one of equal-time, equal-epoch and equal-image arms each)."""
from __future__ import annotations

from detkit.experiments.studies import STUDIES, Scale

BUDGET_KINDS = {"minutes": "equal-time", "epochs": "equal-epoch", "images": "equal-image"}


def scale_text(scale: Scale) -> str:
    """A ``Scale`` in words: "10 min per arm, 8 epochs"."""
    parts = [f"{scale.minutes:g} min per arm" if scale.minutes else "",
             f"{scale.epochs} epoch{'s' * (scale.epochs != 1)}" if scale.epochs else "",
             f"{scale.images} images per arm" if scale.images else ""]
    return ", ".join(part for part in parts if part)


def study_list() -> str:
    """One line per study: name, title, full and quick budgets."""
    return "\n".join(f"{study.name:<17} {study.title}: full {scale_text(study.full)}; quick {scale_text(study.quick)}"
                     for study in STUDIES.values())


def budget_error(study: str, **budgets: float | None) -> str | None:
    """Why a budget given for ``study`` (``minutes=``, ``epochs=``, ``images=``; None: not given) cannot apply: the
    study has no arms of that kind. None when every one applies."""
    full = STUDIES[study].full
    for name, value in budgets.items():
        if value is not None and not getattr(full, name):
            return f"--{name}: {study} has no {BUDGET_KINDS[name]} arms (its budget: {scale_text(full)})"
    return None
