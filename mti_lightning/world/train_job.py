"""A training run from the composed config: what ``mti experiment=train`` and ``mti.train``
both run (the ``train.*`` keys over the model's measured recipe, every check before any work)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.shells.loggers import logger_from_config
from mti_lightning.world.recipes import recipe_for
from mti_lightning.world.train import DEFAULT_RECIPE, prepare_training, train_model


def run_training(cfg: MTIConfig, run_dir: Path, logger: Any = None) -> dict[str, Any] | None:
    """Train ``cfg.model.name`` per ``cfg.train``; write the weights (``train.out``, else
    ``run_dir/model.safetensors``) and their record; return the record (None on DDP processes
    other than the first). ``logger``: a Lightning logger instead of the config's."""
    m = cfg.model
    if cfg.train is None:
        raise MTIConfigError("no train group in the config; compose it with experiment=train")
    if m.pretrained or m.checkpoint:
        raise MTIConfigError(
            "experiment=train trains from random init; drop model.pretrained / model.checkpoint"
        )
    t = asdict(cfg.train)
    overrides = {k: v for k, v in t.items() if k in DEFAULT_RECIPE and v is not None}
    recipe = recipe_for(m.name, overrides)
    trainer = asdict(cfg.trainer)
    prepare_training(recipe, trainer)  # every check before the logger or any work
    out = Path(cfg.train.out or run_dir / "model.safetensors")
    record = train_model(
        recipe,
        out,
        trainer=trainer,
        logger=logger if logger is not None else logger_from_config(cfg, run_dir),
        work_dir=run_dir,
        resume=cfg.checkpoint.resume,
        progress_bar=cfg.trainer.progress_bar,
    )
    if record is not None:
        record["weights"] = str(out)
    return record
