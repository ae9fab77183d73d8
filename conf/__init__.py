"""The ``mti`` command's configs (installed as ``mti_lightning.conf``). Importing the package
registers the typed schema that ``config.yaml`` builds on, so any composition of these files
is checked against it."""

from mti_lightning.face.schema_store import register

register()
