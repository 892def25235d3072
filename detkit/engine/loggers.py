"""Several loggers of one run (CSV beside TensorBoard) writing into one run folder."""
from __future__ import annotations

from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger


def share_run_folder(loggers: list[Logger]) -> None:
    """Fix the ``version_N`` of every CSV and TensorBoard logger now, before any of them makes its folder.

    Each picks the next free ``<save_dir>/<name>/version_N`` when first asked, and Lightning first asks at the
    start of ``fit``, one logger after the other: the second would see the folder the first had just made and
    take N + 1, splitting the run in two. Asked here, loggers given the same ``save_dir`` and ``name`` agree on
    N, so metrics.csv, the TensorBoard events, config.yaml and checkpoints/ (the first logger's folder) land
    in one folder.
    """
    for logger in loggers:
        if isinstance(logger, (CSVLogger, TensorBoardLogger)):
            logger.version  # noqa: B018 - the property picks the version and keeps it
