"""The attribution atlas as resumable stages: dataset pass, selection, tension scatter,
embedding, icons, atlas and viewer (DESIGN.md section 1). Names load on first use, so
``import mti_lightning`` does not start Lightning."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["STAGES", "AtlasConfig", "run_atlas"]

if TYPE_CHECKING:
    from mti_lightning.journeys.atlas.config import AtlasConfig
    from mti_lightning.journeys.atlas.stages import STAGES, run_atlas


def __getattr__(name: str) -> Any:
    if name == "AtlasConfig":
        from mti_lightning.journeys.atlas.config import AtlasConfig

        return AtlasConfig
    if name in ("STAGES", "run_atlas"):
        from mti_lightning.journeys.atlas import stages

        return getattr(stages, name)
    raise AttributeError(f"module 'mti_lightning.journeys.atlas' has no attribute {name!r}")
