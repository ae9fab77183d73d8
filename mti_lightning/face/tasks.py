"""The tasks the ``mti`` command can run, each a pipeline taking the resolved config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def _search(cfg: dict[str, Any], run_dir: Path) -> None:
    from mti_lightning.pipelines.search_job import run_search_job

    run_search_job(cfg, run_dir)


TASKS: dict[str, Callable[[dict[str, Any], Path], None]] = {
    "search": _search,
}
