"""One model of an architecture comparison, checked and loaded, and the comparison's config
group (shared by the run, its training and its report)."""

from __future__ import annotations

from dataclasses import dataclass

from mti_lightning.core.config_schema import CompareSchema, ModelSchema, MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import LoadedModel


def compare_group(cfg: MTIConfig) -> CompareSchema:
    """``cfg.compare``; a clear error when the config was not composed for a comparison."""
    if cfg.compare is None:
        raise MTIConfigError("no compare group in the config; compose it with experiment=compare")
    return cfg.compare


@dataclass
class Plan:
    """One model of the comparison, checked and loaded: where and what to measure."""

    name: str
    lm: LoadedModel
    layer: str
    attribution_layer: str
    position: str
    units: list[int]
    n_channels: int
    note: str
    model_cfg: ModelSchema  # the model config that reloads the same weights
