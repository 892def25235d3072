"""Lightning messages that say nothing about the run, filtered one by one; every other message is kept.

Each filter matches one message's text (and where it comes from), so a new Lightning warning still shows.
"""
from __future__ import annotations

import logging
import warnings

from lightning.pytorch.utilities.rank_zero import rank_zero_module

# "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]..." and the litlogger one
ADVERTISING_PREFIX = "💡 Tip: For seamless cloud"
# Lightning's own pytree helper builds torch's deprecated LeafSpec; nothing in detkit can call it differently
LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


class _DropAdvertising(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(ADVERTISING_PREFIX)


_DROP_ADVERTISING = _DropAdvertising()


def quiet_lightning() -> None:
    """Drop Lightning's advertising tips and the LeafSpec deprecation it triggers inside its own code; idempotent."""
    rank_zero_module.log.addFilter(_DROP_ADVERTISING)  # the logger rank_zero_info writes to
    warnings.filterwarnings("ignore", message=LEAFSPEC_DEPRECATION, category=FutureWarning,
                            module=r"lightning\.pytorch\.utilities\._pytree")
