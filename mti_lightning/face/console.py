"""A quiet console for both faces: what Lightning and W&B print that tells a user nothing about
their run is switched off; every warning about the run itself stays."""

from __future__ import annotations

import logging
import warnings

_TIP_LOGGER = "lightning.pytorch.utilities.rank_zero"  # where Trainer(...) logs its tips


class _NoAdvert(logging.Filter):
    """Drops Lightning's advertisement for its cloud logger (printed by every Trainer)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def quiet_console() -> None:
    """Switch off Lightning's litlogger tip and the warnings a search intends (a frozen network
    in eval mode; a torch-internal deprecation); idempotent."""
    tips = logging.getLogger(_TIP_LOGGER)
    if not any(isinstance(f, _NoAdvert) for f in tips.filters):
        tips.addFilter(_NoAdvert())
    warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
