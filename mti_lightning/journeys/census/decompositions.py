"""Decompositions on the census's pages: the records of decomposition runs
(``mti experiment=decompose``, ``<run>/decompose/components.json``) named by
``census.decompositions`` are folded into ``census/decompositions.json`` (spec -> the layer,
each component's part, share and top channels, and the figure copied into the census), which
the site shows on each unit's page. The census reads the record as a file; the two journeys
share no code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import atomic_write, write_json
from mti_lightning.journeys.census.layout import DECOMPOSITIONS_JSON, unit_slug

KEPT = ("part", "component", "share", "explained", "top_channels")


def record_path(run: str | Path) -> Path:
    """The ``components.json`` of a decomposition run directory; a one-line error if none."""
    path = Path(run) / "decompose" / "components.json"
    if not path.is_file():
        raise MTIConfigError(
            f"census.decompositions: {str(run)!r} holds no decompose/components.json; give the "
            "run directory of an `mti experiment=decompose` run"
        )
    return path


def gather_decompositions(census_dir: Path, runs: list[str], specs: set[str]) -> int:
    """Fold the decomposition runs ``runs`` whose unit is one of ``specs`` into
    ``decompositions.json``; returns how many units have one. Every run is checked first."""
    census_dir = Path(census_dir)
    records = [(f, json.loads(f.read_text())) for f in (record_path(r) for r in runs)]
    path = census_dir / DECOMPOSITIONS_JSON
    table = json.loads(path.read_text()) if path.is_file() else {}
    for file, record in records:
        spec = str(record.get("unit"))
        if spec not in specs:
            print(f"census: decomposition of {spec} left out: not a unit of this census")
            continue
        figure = None
        source = file.parent / "components.png"
        if source.is_file():
            target = census_dir / "decompositions" / f"{unit_slug(spec)}.png"
            atomic_write(target, lambda tmp, s=source: shutil.copyfile(s, tmp))
            figure = target.relative_to(census_dir).as_posix()
        components = [{k: c.get(k) for k in KEPT} for c in record.get("components", [])]
        table[spec] = {"layer": record.get("layer"), "components": components, "figure": figure}
    if records:
        write_json(path, table)
    return len(table)
