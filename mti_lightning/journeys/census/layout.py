"""Where the census's files lie, and how its stages read them.

The data side writes ``units.json`` (the ranked rows), ``data/<layer>.safetensors`` (per image
and unit: ``e_plus``, ``e_minus``, ``activation``; ``units`` the unit ids of the columns) and
``depth.png``; the search side adds ``search.json`` and ``units/<slug>/*.png``; the site adds
``index.html`` and ``pages/<slug>.html``. Every unit's folder and page is named by
:func:`unit_slug` of its spec, so the stages agree without asking each other.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors

UNITS_JSON = "units.json"
SEARCH_JSON = "search.json"
CIRCUITS_JSON = "circuits.json"
DECOMPOSITIONS_JSON = "decompositions.json"
ATLASES_JSON = "atlases.json"


def unit_slug(spec: str) -> str:
    """A file-system name for the unit ``spec`` (``LAYER:UNIT@POSITION``): its safe characters,
    then a short digest of the whole spec, so two specs that differ only in unsafe characters
    stay apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("._")[:60] or "unit"
    return f"{safe}-{hashlib.sha256(spec.encode()).hexdigest()[:8]}"


def unit_dir(census_dir: Path, spec: str) -> Path:
    """The folder of the unit's images (search side) under ``census_dir``."""
    return Path(census_dir) / "units" / unit_slug(spec)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def read_units(census_dir: Path) -> dict[str, Any]:
    """``units.json`` of ``census_dir``, or a clear error when the data side has not run."""
    path = Path(census_dir) / UNITS_JSON
    if not path.is_file():
        raise MTIConfigError(
            f"{path} does not exist; run the census's data side first (it writes units.json)"
        )
    units = read_json(path)
    if not isinstance(units, dict) or not isinstance(units.get("units"), list):
        raise MTIConfigError(f"{path} holds no 'units' list; is it a census's units.json?")
    return units


def read_optional(census_dir: Path, name: str) -> dict[str, Any]:
    """A census file that a later stage adds (``search.json``, ``circuits.json``, ...), or an
    empty mapping when it is not there yet."""
    path = Path(census_dir) / name
    return read_json(path) if path.is_file() else {}


def layer_values(census_dir: Path, layer: str) -> dict[str, torch.Tensor] | None:
    """The data side's per-image values of ``layer`` (None when its file is missing)."""
    path = Path(census_dir) / "data" / f"{layer}.safetensors"
    if "/" in layer or not path.is_file():
        return None
    return load_tensors(path)


def unit_column(values: dict[str, torch.Tensor], unit: int) -> int | None:
    """The column of ``unit`` in a layer's data tensors (None when the layer holds no such
    unit)."""
    hits = (values["units"] == int(unit)).nonzero().flatten()
    return int(hits[0]) if len(hits) else None
