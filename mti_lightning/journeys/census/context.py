"""One census: its config, the directory its jobs share, the model, the data and the plan,
each loaded once and checked before any work."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import mti_lightning.world  # noqa: F401  (registers the built-in world's data sets)
from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import LoadedModel, load_seeded
from mti_lightning.journeys.census.plan import LayerPlan, Piece, job_pieces, pieces, plan_layers
from mti_lightning.shells.images import ImageSource, SourceRequest, open_source


def fingerprint(data: Any) -> str:
    """A hash of JSON-able ``data``."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


class CensusRun:
    """The census that ``cfg`` describes, in ``run_dir`` (or ``cfg.census.out``)."""

    def __init__(
        self,
        cfg: MTIConfig,
        run_dir: str | Path,
        lm: LoadedModel | None = None,
        dataset: Any = None,
        logger: Any = None,
    ):
        if cfg.census is None:
            raise MTIConfigError("no census group in the config; compose it with experiment=census")
        self.cfg, self.c = cfg, cfg.census
        self.run_dir = Path(cfg.census.out) if cfg.census.out else Path(run_dir)
        self.dir = self.run_dir / "census"
        self._lm, self.dataset, self.logger = lm, dataset, logger

    @cached_property
    def lm(self) -> LoadedModel:
        """The model, seeded (a random-init model is the same one in every job)."""
        m = self.cfg.model
        if self._lm is not None:
            lm = self._lm
        else:
            lm = load_seeded(m.name, self.cfg.seed, m.pretrained, m.checkpoint or None)
        if m.input_size:
            lm = dataclasses.replace(lm, input_size=tuple(int(v) for v in m.input_size))
        return lm

    @cached_property
    def plans(self) -> list[LayerPlan]:
        return plan_layers(self.c, self.lm)

    @cached_property
    def pieces(self) -> list[Piece]:
        return pieces(self.plans, self.c.unit_chunk)

    def job_pieces(self, job: int) -> list[Piece]:
        return job_pieces(self.pieces, job, self.c.jobs)

    @cached_property
    def source(self) -> ImageSource:
        """The image source (an empty one is an error here, before any work)."""
        c, size = self.c, self.lm.input_size[1:]
        folder = re.sub(r"[^\w.-]+", "_", c.data)
        request = SourceRequest(
            size,
            Path(c.data_root) if c.data_root else self.run_dir / "data" / folder,
            c.curves_n,
            c.curves_seed,
            {"two_arc_fraction": c.curves_two_arc_fraction},
        )
        data = c.data if self.dataset is None else self.dataset
        source = open_source(data, size, root=c.data_root or None, request=request)
        if len(source) == 0:
            raise MTIConfigError(f"census.data={c.data!r} holds no images")
        return source

    def model_identity(self) -> dict[str, Any]:
        m = self.cfg.model
        return {
            "name": self.lm.name,
            "source": str(self.lm.source),
            "pretrained": m.pretrained,
            "checkpoint": m.checkpoint,
            "input_size": list(self.lm.input_size),
            "seed": self.cfg.seed,
        }

    def job_dir(self, job: int) -> Path:
        return self.dir / "jobs" / f"{job}-of-{self.c.jobs}"

    def job_fingerprint(self, job: int) -> str:
        """What job ``job``'s shards depend on: model, data, position and its pieces."""
        plans = {p.name: p for p in self.plans}
        return fingerprint(
            {
                "model": self.model_identity(),
                "data": self.source.identity(),
                "position": self.c.position,
                "pieces": [
                    [p.key, p.layer, plans[p.layer].attr_layer, list(p.channels),
                     plans[p.layer].path is not None]
                    for p in self.job_pieces(job)
                ],
            }
        )

    def shard_dir(self, job: int) -> Path:
        return self.job_dir(job) / f"shards-{self.job_fingerprint(job)[:12]}"
