"""What a census made, as one object: the ranked rows of ``units.json``, the run directory,
each stage's record; in Jupyter the by-depth figure and the tensest units."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

SHOWN = ("rank", "spec", "tension_p90", "ratio_mean", "frac_tense", "act_mean")


@dataclass
class CensusResult:
    """The census directory ``census_dir`` (``units.json``, ``data/``, ``depth.png``) inside
    ``run_dir``, and the records of the stages that ran."""

    run_dir: Path
    census_dir: Path
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)

    @cached_property
    def table(self) -> dict[str, Any]:
        """``units.json`` (empty before the merge has run)."""
        path = self.census_dir / "units.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row per unit, tensest first (``rank`` 1)."""
        return list(self.table.get("units", []))

    @property
    def depth_png(self) -> Path:
        return self.census_dir / "depth.png"

    def __len__(self) -> int:
        return len(self.rows)

    def _repr_html_(self) -> str:
        where = html.escape(str(self.census_dir))
        parts = [f"<p>{len(self.rows)} units; census <code>{where}</code></p>"]
        if self.depth_png.is_file():
            data = base64.b64encode(self.depth_png.read_bytes()).decode("ascii")
            parts.append(f'<img src="data:image/png;base64,{data}" style="max-width:60%"/>')
        head = "".join(f"<th>{k}</th>" for k in SHOWN)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(k)))}</td>" for k in SHOWN) + "</tr>"
            for r in self.rows[:20]
        )
        return "".join(parts) + f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
