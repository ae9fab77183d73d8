"""One source of defaults: every key of every file in ``conf/`` is a key of the schema
(``core/config_schema.py``) and none repeats the schema's default; every experiment and every
choice of every config group composes and passes the schema's checks."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml

from mti_lightning.core.config_checks import schema_keys
from mti_lightning.core.config_schema import AtlasSchema
from mti_lightning.face.api_config import compose
from mti_lightning.journeys.atlas.config import AtlasConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra",))
FILES = sorted(p for g in GROUPS for p in (CONF / g).glob("*.yaml"))
KEYS = schema_keys()


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        return [leaf for k, v in node.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [(prefix[:-1], node)]


def _default(key: str) -> tuple[bool, Any]:
    """Whether the schema holds ``key`` and its default there (keys under a free-form field,
    such as ``target.layer``, are looked up in that field's default)."""
    if key in KEYS:
        return True, KEYS[key]
    if any(k.startswith(f"{key}.") for k in KEYS):  # a task's group, null until switched on
        return True, None
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in KEYS:
            node = KEYS[head]
            for part in parts[i:]:
                if not isinstance(node, dict):
                    return True, dataclasses.MISSING
                node = node.get(part, dataclasses.MISSING)
            return True, node
    return False, None


def _file_keys(path: Path) -> list[tuple[str, Any]]:
    data = yaml.safe_load(path.read_text()) or {}
    data.pop("defaults", None)
    is_global = "@package _global_" in path.read_text()
    prefix = "" if is_global else f"{path.parent.name}."
    return _leaves(data, prefix) if data else []


def test_every_file_is_found():
    assert len(FILES) >= 30 and {"experiment", "search", "model", "trainer"} <= set(GROUPS)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
def test_each_yaml_key_is_a_schema_key_that_differs_from_its_default(path):
    for key, value in _file_keys(path):
        known, default = _default(key)
        assert known, f"{path.name}: {key} is not in the schema"
        assert value != default or value is None and default is not None, (
            f"{path.parent.name}/{path.name}: {key}={value!r} repeats the schema's default"
        )


CHOICES = [f"{g}={p.stem}" for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
REQUIRED = {"experiment=aggregate": ["aggregate.runs=x"]}


@pytest.mark.parametrize("choice", CHOICES)
def test_every_experiment_and_group_choice_composes_and_checks(choice):
    cfg = compose([choice, *REQUIRED.get(choice, [])])  # compose runs the schema's checks
    group, name = choice.split("=")
    if group == "experiment":
        task = cfg["task"]
        owned = {"atlas": "atlas", "compare": "compare", "train": "train", "toys": "toys"}
        if task in owned:
            assert isinstance(cfg[owned[task]], dict) and cfg[owned[task]]
    elif group == "model":
        assert cfg["model"]["name"]


def test_the_atlas_takes_its_defaults_from_the_schema():
    atlas = compose(["experiment=atlas"])["atlas"]
    made = AtlasConfig()
    for f in dataclasses.fields(AtlasSchema):
        assert getattr(made, f.name) == atlas[f.name] == KEYS[f"atlas.{f.name}"], f.name
    assert made.layers == ["auto"]
