"""One model of an architecture comparison, checked and loaded (shared by the run and its
report)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mti_lightning.core.models import LoadedModel


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
    model_cfg: dict[str, Any]
