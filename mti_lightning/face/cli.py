"""The ``mti`` command: Hydra composes ``conf/`` and the command line, then runs one task.

Bad input ends the command with one line on stderr naming the bad value and the valid
choices, and exit code 2, as does a full disk (the file it could not write, the space needed); in a multirun the other jobs still run and the command lists the
failed ones at the end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mti_lightning.core.errors import DiskFullError, MTIConfigError
from mti_lightning.core.io import disk_full, write_text
from mti_lightning.face.config_check import check_composed, composition_error, typed_config
from mti_lightning.face.console import quiet_console
from mti_lightning.face.failures import clear_failure, record_failure, report_failures
from mti_lightning.face.tasks import run_task


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


def _quiet_lightning() -> None:
    """Lightning's messages go through Hydra's log handlers once (not twice), without what
    tells a user nothing about the run (``face/console.py``)."""
    import lightning  # noqa: F401  (adds its own console handler on import)

    logging.getLogger("lightning").handlers.clear()
    quiet_console()


def _default_group(config: dict[str, Any]) -> None:
    """In a multirun every job's W&B run joins one group, by default the sweep directory's
    name, so a sweep is one group in the W&B UI."""
    hc = HydraConfig.get()
    logger = config.get("logger")
    if hc.mode == RunMode.MULTIRUN and isinstance(logger, dict) and not logger.get("group"):
        logger["group"] = Path(hc.sweep.dir).name


_started: list[bool] = []  # set once the task function runs (composition is over)


@hydra.main(version_base="1.3", config_path="pkg://mti_lightning.conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    _started.append(True)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    _quiet_lightning()
    task = cfg.task
    clear_failure(run_dir)
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise MTIConfigError(
                f"missing value for {', '.join(missing)}; set it on the command line"
            )
        config = _resolve(cfg)
        check_composed(config)
        _default_group(config)
        typed = typed_config(config)
        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(asdict(typed)))
        run_task(task, typed, run_dir)
    except Exception as caught:
        err = caught if isinstance(caught, MTIConfigError) else disk_full(caught)
        if err is None:
            raise
        print(f"mti: error: {err}", file=sys.stderr)
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            sys.exit(2)
        # in a sweep: Hydra records this job as failed and runs the others (an exit would end
        # a local sweep here and leave a SLURM job without a result for its launcher); on a
        # full disk the record may not fit either, and the line above has said why
        with contextlib.suppress(DiskFullError):
            record_failure(run_dir, str(err))
        raise


def _gone_keys(argv: list[str]) -> None:
    """Keys that moved are errors naming their replacement (checked before Hydra, which would
    only say that the key is not in the config)."""
    from mti_lightning.journeys.atlas.face import GONE

    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key.startswith("atlas.") and key[len("atlas.") :] in GONE:
            print(f"mti: error: {key} is gone; use {GONE[key[len('atlas.') :]]}", file=sys.stderr)
            sys.exit(2)


def main() -> None:
    """Entry point of the ``mti`` console script. An error while composing the config or
    making the run directory is one line and exit code 2 (``face/config_check.py``); after a
    multirun with failed jobs it lists them (``face/failures.py``) and exits with code 2."""
    _gone_keys(sys.argv[1:])
    # Hydra's own report of an error is a multi-line listing and exit code 1: let the error
    # reach this function instead
    os.environ["HYDRA_FULL_ERROR"] = "1"
    # a log handler that cannot write (a full disk under W&B's debug log) stays quiet instead
    # of printing a traceback per record
    logging.raiseExceptions = False
    try:
        _main()
    except SystemExit as done:
        if done.code not in (0, None) and report_failures():
            sys.exit(2)
        raise
    except Exception as err:
        if report_failures():
            sys.exit(2)
        message = disk_full(err) or (None if _started else composition_error(err))
        if message is None:
            raise
        print(f"mti: error: {message}", file=sys.stderr)
        sys.exit(2)
