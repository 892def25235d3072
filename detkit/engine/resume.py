"""``--resume last | CKPT``: which checkpoint a run continues from, and in which run folder.

A run folder is ``<save_dir>/<name>/<version>/`` with ``config.yaml`` and ``checkpoints/`` (Lightning's layout).
``last`` is the newest ``checkpoints/last.ckpt`` among the runs of the configured ``save_dir``/``name`` whose
saved config trained the same model on the same data (``model``, ``data`` and ``seed_everything`` equal).
"""
from __future__ import annotations

import csv
import glob
import os
from dataclasses import dataclass

import yaml

from detkit.inference.config import config_beside, run_dir_of

SAME_RUN_SECTIONS = ("seed_everything", "model", "data")


@dataclass(frozen=True)
class ResumeTarget:
    """checkpoint: the file to continue from; run_dir: the run folder to continue in (None: a new version)."""
    checkpoint: str
    run_dir: str | None


def find_resume_target(resume: str, save_dir: str | None, name: str | None, config: dict) -> ResumeTarget:
    """``resume``: "last" or a checkpoint path; ``save_dir``/``name``: the first logger's (None without a logger,
    then ``last`` is not available); ``config``: the run's resolved config as plain dicts.

    Raises FileNotFoundError / ValueError naming the path searched or the config keys that differ.
    """
    if resume != "last":
        if not os.path.isfile(resume):
            raise FileNotFoundError(f"--resume: checkpoint {resume} does not exist")
        return ResumeTarget(resume, run_dir_of(resume) if os.path.isfile(config_beside(resume)) else None)
    if save_dir is None:
        raise ValueError("--resume last needs a logger (trainer.logger) to find the run; pass --resume <checkpoint>")
    pattern = os.path.join(save_dir, name or "", "*", "checkpoints", "last.ckpt")
    candidates = sorted(glob.glob(pattern), key=os.path.getmtime, reverse=True)
    if not candidates:
        raise FileNotFoundError(f"--resume last: no run has a checkpoint ({pattern} matches nothing)")
    differences = {}
    for checkpoint in candidates:
        run_dir = run_dir_of(checkpoint)
        differing = config_differences(_read_yaml(config_beside(checkpoint)), config)
        if not differing:
            return ResumeTarget(checkpoint, run_dir)
        differences[run_dir] = differing
    listing = "; ".join(f"{run}: {', '.join(keys[:5])}" for run, keys in differences.items())
    raise ValueError(f"--resume last: no run under {os.path.join(save_dir, name or '')} was trained with this config "
                     f"(keys that differ: {listing}); pass --resume <checkpoint> to continue one of them anyway")


def config_differences(saved: dict, current: dict, sections=SAME_RUN_SECTIONS) -> list[str]:
    """Dotted keys under ``sections`` whose values differ between two configs (a missing key counts)."""
    differing: list[str] = []
    for section in sections:
        _compare(saved.get(section), current.get(section), section, differing)
    return differing


def _compare(a, b, key: str, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for sub in sorted(set(a) | set(b)):
            _compare(a.get(sub), b.get(sub), f"{key}.{sub}", out)
    elif a != b:
        out.append(key)


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path) as file:
        return yaml.safe_load(file) or {}


def keep_csv_history(logger, resumed_step: int) -> None:
    """Keep a resumed run's earlier ``metrics.csv`` rows (up to ``resumed_step``) that Lightning's CSV writer
    deletes when it opens an existing run folder; later rows, logged after the checkpoint, are dropped."""
    path = os.path.join(logger.log_dir, "metrics.csv")
    if not os.path.isfile(path):
        return
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        header, rows = list(reader.fieldnames or []), list(reader)
    writer = logger.experiment  # creating it removes the file
    kept = [row for row in rows if not row.get("step") or int(float(row["step"])) <= resumed_step]
    with open(path, "w", newline="") as file:
        csv_writer = csv.DictWriter(file, fieldnames=sorted(header))
        csv_writer.writeheader()
        csv_writer.writerows(kept)
    writer.metrics_keys = sorted(header)
