"""The atlas from the composed config of the ``mti`` command or the Python API: the model and
the feature come from the same ``model=`` and ``target=`` keys as a search's, everything else
from ``atlas.*``. Keys the atlas once had for the model and feature are errors naming their
replacement."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.layer_choice import one_feature
from mti_lightning.core.models import LoadedModel
from mti_lightning.journeys.atlas.config import AtlasConfig
from mti_lightning.journeys.atlas.result import AtlasResult
from mti_lightning.journeys.atlas.stages import run_atlas

# what an atlas run's W&B artifact holds (the dataset pass's shards stay in the run directory)
ATLAS_OUTPUTS = (
    "atlas",
    "scatter",
    "embedding",
    "icons",
    "selection",
    "viewer",
    "atlas_config.json",
    "config.yaml",
)

GONE = {
    "model": "model=NAME (or model.name=NAME)",
    "feature": "target=LAYER:CHANNEL@POSITION",
    "input_size": "model.input_size=[C,H,W]",
    "pretrained": "model.pretrained=true",
    "checkpoint": "model.checkpoint=PATH",
}


def atlas_config(cfg: MTIConfig, lm: LoadedModel | None = None) -> AtlasConfig:
    """The atlas's flat config from the config's ``atlas``, ``model`` and ``target`` (``lm``:
    an already loaded model)."""
    from mti_lightning.journeys.atlas.dataset_pass import load_atlas_model

    if cfg.atlas is None:
        raise MTIConfigError("no atlas group in the config; compose it with experiment=atlas")
    atlas = asdict(cfg.atlas)
    m = cfg.model
    model = {
        "model": lm.source if lm is not None else m.name,
        "pretrained": m.pretrained if lm is None else False,
        "checkpoint": (m.checkpoint or "") if lm is None else "",
        "input_size": list(m.input_size) if m.input_size else 0,
    }
    draft = AtlasConfig.from_dict({**atlas, **model})
    loaded = lm if lm is not None else load_atlas_model(draft)
    from mti_lightning.journeys.atlas.dataset_pass import with_input_size

    sized = with_input_size(loaded, draft.input_size)
    feature = str(one_feature(cfg.target, sized, "the atlas maps one"))
    return AtlasConfig.from_dict({**atlas, **model, "feature": feature})


def atlas_from_config(
    cfg: MTIConfig,
    run_dir: Path,
    stage: str | None = None,
    lm: LoadedModel | None = None,
    dataset: Any = None,
    logger: Any = None,
) -> AtlasResult:
    """Run the atlas that ``cfg`` describes into ``run_dir``; print each stage's state."""
    from mti_lightning.shells.loggers import logger_from_config
    from mti_lightning.shells.wandb_record import track_outputs

    run_dir = Path(run_dir)
    atlas = atlas_config(cfg, lm)
    if logger is None:
        logger = logger_from_config(cfg, run_dir)
    results = run_atlas(atlas, run_dir, stage or cfg.stage, logger or None, lm, dataset)
    track_outputs(logger, run_dir, "atlas", ATLAS_OUTPUTS, asdict(cfg))
    for name, record in results.items():
        state = "skipped (up to date)" if record.get("skipped") else "done"
        print(f"atlas stage {name:<13} {state}")
    print(
        f"mti: atlas {run_dir / 'atlas' / 'atlas.png'}; viewer {run_dir / 'atlas' / 'atlas.html'}"
    )
    return AtlasResult(run_dir, results, atlas)
