"""Circuits on the census's pages: the records of circuit runs (``mti experiment=circuit``,
``<run>/circuit/circuit.json``) named by ``census.circuits`` are folded into
``census/circuits.json`` (spec -> the unit's strongest inhibitory and excitatory upstream
channels with their shares, the ablation's rise, and the circuit figure copied into the
census), which the site shows on each unit's page.

The census reads the circuit's record as a file; the two journeys share no code.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import atomic_write, write_json
from mti_lightning.journeys.census.layout import CIRCUITS_JSON, unit_slug


def circuit_record_path(run: str | Path) -> Path:
    """The ``circuit.json`` of a circuit run directory (or of its ``circuit`` folder, or the
    file itself); a one-line error when there is none."""
    run = Path(run)
    for path in (run / "circuit" / "circuit.json", run / "circuit.json", run):
        if path.is_file() and path.name == "circuit.json":
            return path
    raise MTIConfigError(
        f"census.circuits: {str(run)!r} holds no circuit/circuit.json; give the run directory "
        "of an `mti experiment=circuit` run"
    )


def _entry(record: dict[str, Any], figure: str | None) -> dict[str, Any]:
    rows = {int(r["channel"]): r for r in record.get("channels", [])}

    def side(channels: list[int], share: str) -> list[dict[str, Any]]:
        return [
            {
                "channel": int(c),
                "share": float(rows.get(int(c), {}).get(share, 0.0)),
                "cancels": bool(rows.get(int(c), {}).get("cancels", False)),
            }
            for c in channels
        ]

    ablation = record.get("ablation") or {}
    return {
        "layer": record.get("layer"),
        "inhibitory": side(record.get("inhibitory", []), "share_minus"),
        "excitatory": side(record.get("excitatory", []), "share_plus"),
        "spearman_weight_attribution": record.get("spearman_weight_attribution"),
        "ablation_rise": ablation.get("rise_inhibitory"),
        "ablation_rise_control": ablation.get("rise_control_mean"),
        "figure": figure,
    }


def gather_circuits(census_dir: Path, runs: list[str], specs: set[str]) -> int:
    """Fold the circuit runs ``runs`` whose unit is one of the census's ``specs`` into
    ``circuits.json`` (kept entries of earlier runs are replaced by a newer record of the same
    unit); returns how many units have a circuit. Every run is checked before anything is
    written."""
    census_dir = Path(census_dir)
    files = [circuit_record_path(r) for r in runs]
    records = [(f, json.loads(f.read_text())) for f in files]
    path = census_dir / CIRCUITS_JSON
    table: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    skipped = []
    for file, record in records:
        spec = str(record.get("unit"))
        if spec not in specs:
            skipped.append(spec)
            continue
        figure = None
        source = file.parent / "circuit.png"
        if source.is_file():
            target = census_dir / "circuits" / f"{unit_slug(spec)}.png"
            atomic_write(target, lambda tmp, s=source: shutil.copyfile(s, tmp))
            figure = target.relative_to(census_dir).as_posix()
        table[spec] = _entry(record, figure)
    if skipped:
        print(f"census: circuit(s) of {sorted(skipped)} left out: not units of this census")
    if records:
        write_json(path, table)
    return len(table)
