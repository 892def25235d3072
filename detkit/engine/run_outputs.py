"""Checks made before a run writes anything: every folder it writes to can be written, and no earlier run's
files are overwritten.

Without them an unwritable folder fails only once Lightning first creates it (a bare OSError without the
config key), and a run pointed at an earlier run's folder (``trainer.logger.init_args.version``) has
Lightning's CSV writer delete that run's ``metrics.csv`` before the config check stops it.
"""
from __future__ import annotations

import os


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files could not be written into ``folder`` (created if missing, with its parents), or None if they can."""
    existing = os.path.abspath(folder)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None


def check_writable(folder: str | os.PathLike, key: str) -> None:
    """ValueError naming ``key`` and ``folder`` when files cannot be written into ``folder``."""
    reason = unwritable_reason(folder)
    if reason is not None:
        raise ValueError(f"{key}: cannot write into {folder}: {reason}")


def output_folders(trainer, results_path: str | None) -> list[tuple[str, str]]:
    """(config key, folder) of every folder a training run writes to: each logger's ``save_dir`` (the run folder
    and its checkpoints go there), ``trainer.default_root_dir`` without a logger, an explicit ``checkpoint.dirpath``
    and the folder of ``model.results_path``."""
    loggers = trainer.loggers
    folders = [(f"trainer.logger{'' if len(loggers) == 1 else f'[{index}]'}.init_args.save_dir", logger.save_dir)
               for index, logger in enumerate(loggers) if logger.save_dir is not None]
    if not loggers:
        folders.append(("trainer.default_root_dir", trainer.default_root_dir))
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        folders.append(("checkpoint.dirpath", checkpoint.dirpath))
    if results_path:
        folders.append(("model.results_path", os.path.dirname(os.path.abspath(results_path))))
    return folders


def check_run_outputs(trainer, results_path: str | None, new_run: bool) -> None:
    """Before ``fit`` (rank 0): every output folder is writable and, for a ``new_run`` (not a resumed one), the
    run folder of each logger holds nothing yet. ValueError naming the config key and the path otherwise."""
    if not trainer.is_global_zero:
        return
    for key, folder in output_folders(trainer, results_path):
        check_writable(folder, key)
    for logger in trainer.loggers if new_run else []:
        run_folder = getattr(logger, "log_dir", None)  # CSV and TensorBoard: <save_dir>/<name>/<version>
        if run_folder and os.path.isdir(run_folder) and os.listdir(run_folder):
            raise ValueError(
                f"trainer.logger.init_args.version: the run folder {run_folder} holds an earlier run "
                f"({', '.join(sorted(os.listdir(run_folder))[:5])}); leave version null for the next free one, "
                f"choose another version, name or save_dir, or continue that run with --resume")


def next_free_path(path: str) -> str:
    """``path`` if nothing is there yet, else the first free ``<stem>-v1<ext>``, ``-v2``... (Lightning's checkpoint
    naming): a second evaluation keeps the results of the first."""
    stem, extension = os.path.splitext(path)
    candidate, version = path, 0
    while os.path.exists(candidate):
        version += 1
        candidate = f"{stem}-v{version}{extension}"
    return candidate
