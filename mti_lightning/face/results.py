"""What ``mti.compare`` and ``mti.train`` return: result objects like the search's and the
atlas's (``.run_dir``, ``.rows``, shown in Jupyter), which keep the access their earlier
plain values gave (the comparison's rows as a list, the training record as a dict)."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _img(path: Path) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" style="max-width:100%"/>'


def _table(rows: list[dict[str, Any]], limit: int = 40) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(r.get(c)))}</td>" for c in cols) + "</tr>"
        for r in rows[:limit]
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class CompareResult:
    """The comparison: one row per (model, unit) of ``compare.csv`` and the run directory
    holding the report (``compare_report.md``/``.png``). Iterates, indexes and counts as the
    list of rows."""

    run_dir: Path
    rows: list[dict[str, Any]]

    @property
    def report_png(self) -> Path:
        """The findings per architecture."""
        return self.run_dir / "compare_report.png"

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]

    def _repr_png_(self) -> bytes | None:
        return self.report_png.read_bytes() if self.report_png.is_file() else None

    def _repr_html_(self) -> str:
        where = html.escape(str(self.run_dir))
        models = sorted({str(r.get("model")) for r in self.rows})
        about = f"<p>{len(self.rows)} units of {', '.join(map(html.escape, models))}; "
        return about + f"run directory <code>{where}</code></p>" + _img(self.report_png)


@dataclass
class TrainResult(Mapping):
    """A trained network: its record (constructor, recipe, held-out accuracy, training time;
    ``record["weights"]`` is the weights file ``load_model(name, checkpoint=...)`` loads) and
    the run directory. Reads as the record (``result["weights"]``)."""

    run_dir: Path
    record: dict[str, Any]

    @property
    def weights(self) -> Path:
        """The weights file (safetensors)."""
        return Path(self.record["weights"])

    @property
    def rows(self) -> list[dict[str, Any]]:
        """One row: the network, its held-out accuracy, steps and time."""
        result = self.record.get("result", {})
        keys = ("held_out_accuracy", "steps", "train_seconds")
        return [{"weights": str(self.weights), **{k: result.get(k) for k in keys}}]

    def __getitem__(self, key: str) -> Any:
        return self.record[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.record)

    def __len__(self) -> int:
        return len(self.record)

    def _repr_html_(self) -> str:
        where = html.escape(str(self.run_dir))
        return f"<p>run directory <code>{where}</code></p>" + _table(self.rows)
