"""``mti_lightning.conf`` when the package runs from its source tree, not installed.

``conf/`` sits at the top of the repository and installs as ``mti_lightning.conf`` (a wheel
copies it in, an editable install maps it). Imported straight from a checkout (a wheel
installed elsewhere shadowed by the current directory, ``PYTHONPATH=$PWD`` as
``benchmarks/gpu.sh`` runs), the package has no such module and Hydra stops with
"Primary config module 'mti_lightning.conf' not found". A finder for that one name, added only
in that case, points it at the checkout's ``conf/``; nothing is imported until it is asked for.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from importlib.machinery import ModuleSpec
from pathlib import Path

NAME = "mti_lightning.conf"
CONF = Path(__file__).resolve().parents[2] / "conf"


class _ConfFinder(importlib.abc.MetaPathFinder):
    """Finds ``mti_lightning.conf`` in the checkout's ``conf/``."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname != NAME:
            return None
        return importlib.util.spec_from_file_location(
            NAME, CONF / "__init__.py", submodule_search_locations=[str(CONF)]
        )


def map_checkout_conf() -> None:
    """Add the finder when the configs are not importable otherwise and the checkout has them."""
    if (CONF / "config.yaml").is_file() and importlib.util.find_spec(NAME) is None:
        sys.meta_path.append(_ConfFinder())
