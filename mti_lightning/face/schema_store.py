"""Registers the config schema (``core/config_schema.py``) in Hydra's ConfigStore as the
structured config under ``conf/config.yaml``, so that every composition of ``conf/`` (the
``mti`` command, the Python API, sweep tools) is typed by the one source of defaults."""

from __future__ import annotations

from hydra.core.config_store import ConfigStore

from mti_lightning.core.config_schema import MTIConfig

SCHEMA_NAME = "mti_schema"


def register() -> None:
    """Store :class:`MTIConfig` as ``mti_schema`` (idempotent)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=MTIConfig)
