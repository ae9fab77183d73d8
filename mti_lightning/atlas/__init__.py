"""The attribution atlas as resumable stages: dataset pass, selection, tension scatter,
embedding, icons, atlas and viewer (DESIGN.md section 1)."""

from mti_lightning.atlas.config import AtlasConfig
from mti_lightning.atlas.stages import STAGES, run_atlas

__all__ = ["STAGES", "AtlasConfig", "run_atlas"]
