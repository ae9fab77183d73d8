"""The ``mti`` command: Hydra composes ``conf/`` and the command line, then runs one task.

Bad input ends the command with one line on stderr naming the bad value and the valid
choices, and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.face.tasks import TASKS


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)


@hydra.main(version_base="1.3", config_path="pkg://mti_lightning.conf", config_name="config")
def _main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    task = cfg.get("task", "search")
    try:
        if task not in TASKS:
            raise MTIConfigError(f"task {task!r}; valid: {', '.join(TASKS)}")
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise MTIConfigError(
                f"missing value for {', '.join(missing)}; set it on the command line"
            )
        config = _resolve(cfg)
        from mti_lightning.core.io import write_text

        write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        TASKS[task](config, run_dir)
    except MTIConfigError as err:
        print(f"mti: error: {err}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    """Entry point of the ``mti`` console script."""
    _main()
