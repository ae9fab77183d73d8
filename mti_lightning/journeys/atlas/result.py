"""What an atlas run made, as one object that shows itself in Jupyter (the atlas image and
the tension scatter) and points at its files."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mti_lightning.journeys.atlas.config import AtlasConfig


@dataclass
class AtlasResult:
    """The run directory, each stage's recorded result, and the config it ran with."""

    run_dir: Path
    stages: dict[str, dict[str, Any]]
    config: AtlasConfig

    @property
    def atlas_png(self) -> Path:
        """The atlas image: one icon per occupied cell, borders red (excite) or blue
        (inhibit)."""
        return self.run_dir / "atlas" / "atlas.png"

    @property
    def scatter_png(self) -> Path:
        """The tension scatter: E+ against E- for every image, coloured by activation."""
        return self.run_dir / "scatter" / "tension_scatter.png"

    @property
    def viewer(self) -> Path:
        """The self-contained HTML viewer."""
        return self.run_dir / "atlas" / "atlas.html"

    @property
    def n_failed(self) -> int:
        """Images of the data set that did not decode (skipped by the dataset pass)."""
        return int(self.stages.get("dataset_pass", {}).get("n_failed", 0))

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per stage: its name, whether it was up to date, and its recorded numbers."""
        plain = (str, int, float, bool)
        return [
            {"stage": name, **{k: v for k, v in rec.items() if isinstance(v, plain)}}
            for name, rec in self.stages.items()
        ]

    def _repr_png_(self) -> bytes | None:
        return self.atlas_png.read_bytes() if self.atlas_png.is_file() else None

    def _repr_html_(self) -> str:
        parts = []
        for path in (self.atlas_png, self.scatter_png):
            if path.is_file():
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                parts.append(f'<img src="data:image/png;base64,{data}" style="max-width:48%"/>')
        where = html.escape(str(self.run_dir))
        about = html.escape(
            f"{self.config.model} {self.config.feature} @ {self.config.atlas_layer}"
        )
        return f"<p>{about}; run directory <code>{where}</code></p>" + "".join(parts)
