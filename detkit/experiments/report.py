"""A study's results on disk: ``results.json`` (the raw per-arm numbers), ``results.md`` (the table, the command, the
commit and the machine) and ``plot.png`` (``detkit.drawing.studies``)."""
from __future__ import annotations

import os
import shlex
import warnings
from typing import Callable

from detkit.atomic_io import write_json_atomically

NOT_APPLICABLE = "–"


def _record(outcome: dict, key: str, fmt: str, scale: float = 1.0, unit: str = "") -> str:
    """The arm's recorded ``key`` times ``scale`` formatted, or a dash where the arm has none (evaluation arms)."""
    value = outcome.get("record", {}).get(key)
    return NOT_APPLICABLE if value is None else format(value if scale == 1 else value * scale, fmt) + unit


def _stat(name: str) -> Callable[[dict], str]:
    def cell(outcome: dict) -> str:
        value = outcome["record"]["stats"].get(name)
        return NOT_APPLICABLE if value is None or value < 0 else f"{value:.3f}"  # -1: no ground truth of that size
    return cell


def _coverage(key: str, share_only: bool = False) -> Callable[[dict], str]:
    """The count (and share) of the training objects in ``key`` of the arm's first dense stage's coverage."""
    def cell(outcome: dict) -> str:
        stages = outcome["record"].get("coverage") or {}
        if not stages:
            return NOT_APPLICABLE
        coverage = next(iter(stages.values()))  # RetinaNet's only stage, Faster R-CNN's RPN
        share = 100 * coverage[key] / max(coverage["objects"], 1)
        return f"{share:.1f}%" if share_only else f"{coverage[key]} of {coverage['objects']} ({share:.1f}%)"
    return cell


# key -> (header, cell of a finished arm's outcome)
COLUMNS: dict[str, tuple[str, Callable[[dict], str]]] = {
    "group": ("group", lambda o: o["group"] or NOT_APPLICABLE),
    "nms": ("NMS IoU", lambda o: NOT_APPLICABLE if o["value"] is None else f"{o['value']:g}"),
    **{name: (name, _stat(name)) for name in ("AP", "AP50", "AP75", "APs", "APm", "APl")},
    "train_ips": ("train images/s", lambda o: _record(o, "train_images_per_second", ".1f")),
    "inference_ips": ("inference images/s", lambda o: _record(o, "inference_images_per_second", ".1f")),
    "steps": ("steps", lambda o: _record(o, "steps", "d")),
    "epochs": ("epochs", lambda o: _record(o, "epochs", ".1f")),
    "parameters": ("parameters", lambda o: _record(o, "parameters", ".2f", 1e-6, " M")),
    "fit_minutes": ("fit minutes", lambda o: _record(o, "fit_seconds", ".1f", 1 / 60)),
    "no_positive": ("objects with no positive anchor", _coverage("no_positive")),
    "below_fg": ("best anchor IoU < fg", _coverage("below_fg")),
    "no_anchor_half": ("no anchor at IoU >= 0.5", _coverage("below_half", share_only=True)),
}


def table(columns: tuple[str, ...], outcomes: list[dict]) -> str:
    """The Markdown table: a row per arm (label first), a failed arm's row saying so."""
    headers = ["arm", *(COLUMNS[key][0] for key in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for outcome in outcomes:
        if outcome["status"] == "failed":
            cells = ["**failed** (see below)"] + [""] * (len(columns) - 1)
        else:
            cells = [COLUMNS[key][1](outcome) for key in columns]
        lines.append("| " + " | ".join([outcome["label"], *cells]) + " |")
    return "\n".join(lines)


def markdown(study, document: dict) -> str:
    """``results.md``: heading, claim, table, failures, notes, plot, and how and where the numbers were made."""
    source = document["provenance"]
    outcomes = document["arms"]
    commit = source["commit"] + (" (with uncommitted changes)" if source["uncommitted_changes"] else "")
    parts = [f"# {document['title']}{' (quick version)' if document['quick'] else ''}", "",
             f"Claim: {document['claim']}", "", table(study.columns, outcomes), ""]
    failed = [o for o in outcomes if o["status"] == "failed"]
    if failed:
        parts += ["Failed arms:", ""] + [f"- {o['label']}: {o['error']} (log: `{o['log']}`)" for o in failed] + [""]
    parts += [f"Budget: {document['budget']}{'; quick version' if document['quick'] else ''}.", ""]
    parts += [f"- {note}" for note in document["notes"]] + ([""] if document["notes"] else [])
    parts += ["![plot](plot.png)", "", "## How these numbers were made", "",
              f"- command: `{source['command']}`" if source["command"] else "- command: (run from Python)",
              f"- commit: `{commit}`",
              f"- machine: {source['cpu']}, {source['cores']} cores, {source['threads_per_arm']} threads per arm; "
              f"Python {source['python']}, torch {source['torch']}, Lightning {source['lightning']}",
              f"- date: {source['date']}",
              "- every arm ran in its own process through `detkit.engine.cli` (`tools/train.py`'s entry point; "
              "`tools/eval.py`'s for evaluation-only arms) with the shipped config's fixed seeds; val AP is that of "
              "the best checkpoint on the config's val split", "",
              "| arm | config and overrides | run |", "|---|---|---|"]
    parts += [_arm_row(outcome) for outcome in outcomes]
    return "\n".join(parts) + "\n"


def _arm_row(outcome: dict) -> str:
    """| label | config and overrides | run folder |, for the table of how each arm was run."""
    command = " ".join([outcome["config"], *map(shlex.quote, outcome["overrides"])])
    evaluated = f" (evaluates the best checkpoint of {outcome['evaluates']})" if outcome["evaluates"] else ""
    reused = " (reused)" if outcome["status"] == "reused" else ""
    return f"| {outcome['label']} | `{command}`{evaluated} | `{outcome['run_dir'] or NOT_APPLICABLE}`{reused} |"


def write_results(study, document: dict, folder: str) -> None:
    """Write ``results.json``, ``results.md`` and ``plot.png`` into ``folder`` (each file replaced whole). A plot
    that cannot be drawn is a warning: the numbers are already written."""
    os.makedirs(folder, exist_ok=True)
    write_json_atomically(document, os.path.join(folder, "results.json"))
    temporary = os.path.join(folder, f".results.md.{os.getpid()}.tmp")
    with open(temporary, "w") as file:
        file.write(markdown(study, document))
    os.replace(temporary, os.path.join(folder, "results.md"))
    from detkit.drawing.studies import save_study_plot  # matplotlib: only when writing

    try:
        save_study_plot(study, document, os.path.join(folder, "plot.png"))
    except (ValueError, OSError, KeyError, TypeError) as error:
        warnings.warn(f"plot of {study.name} not written to {folder}: {error}", stacklevel=2)
