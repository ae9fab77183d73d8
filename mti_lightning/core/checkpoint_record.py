"""The record written beside a trained checkpoint: how to rebuild the network it fits.

``mti experiment=train`` writes ``model.safetensors`` and ``model.yaml``; the YAML's ``model``
section names the architecture, the constructor arguments it was trained with (``num_classes``,
``img_size``, ...), and its input size and normalisation. :func:`model_record` reads it, so that
``load_model(name, checkpoint=PATH)`` builds the same network at the same input size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from mti_lightning.core.errors import MTIConfigError


def record_path(checkpoint: str | Path) -> Path:
    """Where the record of ``checkpoint`` lives: the same name with a ``.yaml`` suffix."""
    return Path(checkpoint).with_suffix(".yaml")


def model_record(checkpoint: str | Path, name: str) -> dict[str, Any]:
    """The ``model`` section of the record beside ``checkpoint`` ({} when there is none).

    A record made for another architecture than ``name`` is a clear error.
    """
    path = record_path(checkpoint)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise MTIConfigError(f"checkpoint record {path} is not valid YAML ({err})") from err
    record = data.get("model") if isinstance(data, dict) else None
    if not isinstance(record, dict):
        return {}
    if record.get("name") != name:
        raise MTIConfigError(
            f"checkpoint {checkpoint} was trained for model {record.get('name')!r} (per {path}), "
            f"not {name!r}; set model.name={record.get('name')}"
        )
    return record
