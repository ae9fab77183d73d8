"""The layered architecture holds: each package imports only the floors below it (and itself).

Floors, bottom up: the core (pure PyTorch: no Lightning, W&B or Hydra), the engine
(``shells``), the built-in world (``world``), the journeys (``journeys/search``,
``journeys/atlas``, ``journeys/compare``, ``journeys/census``), which never import each other, and the face
(``face``, ``api.py``, the package's ``__init__``), which may import everything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import mti_lightning

ROOT = Path(mti_lightning.__file__).parent
FORBIDDEN_IN_CORE = ("lightning", "pytorch_lightning", "wandb", "hydra", "omegaconf")
FLOORS = {"core": {"core"}, "shells": {"core", "shells"}, "world": {"core", "shells", "world"}}
JOURNEYS = ("search", "atlas", "compare", "census", "circuit", "decompose")
# the face: the command (with its configs, installed as mti_lightning.conf in a wheel), the API
FACE = ("face", "api", "__init__", "conf")
ALLOWED = {
    **FLOORS,
    **{j: {"core", "shells", "world", j} for j in JOURNEYS},
    **{f: {*FLOORS, *JOURNEYS, *FACE} for f in FACE},
    "journeys": set(),  # the folder's own __init__ imports nothing
}


def package_of(path: Path) -> str:
    """The part of ``mti_lightning`` that ``path`` belongs to (``api`` for api.py, the journey's
    name for a file under ``journeys/``)."""
    parts = path.relative_to(ROOT).parts
    if parts[0] == "journeys" and len(parts) > 2:
        return parts[1]
    return parts[0].removesuffix(".py")


def part_of(module: str) -> str | None:
    """The part of ``mti_lightning`` that the imported ``module`` belongs to (None outside the
    package, or for the package itself)."""
    parts = module.split(".")
    if parts[0] != "mti_lightning" or len(parts) < 2:
        return None
    if parts[1] == "journeys" and len(parts) > 2:
        return parts[2]
    return parts[1]


def imported_modules(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth (function-level imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
            if node.module == "mti_lightning":  # from mti_lightning import world
                names += [f"mti_lightning.{a.name}" for a in node.names]
    return names


def sources() -> list[Path]:
    files = sorted(ROOT.rglob("*.py"))
    assert len(files) > 50
    return files


def test_every_package_has_a_floor() -> None:
    assert {package_of(p) for p in sources()} <= set(ALLOWED)


def test_core_imports_no_lightning_wandb_or_hydra() -> None:
    offenders = [
        (path.name, name)
        for path in sources()
        if package_of(path) == "core"
        for name in imported_modules(path)
        if name.split(".")[0] in FORBIDDEN_IN_CORE
    ]
    assert offenders == []


def test_every_package_imports_only_its_floors() -> None:
    """core only core; shells core+shells; world the floors and itself; a journey the floors
    and itself, never another journey; the face everything."""
    offenders = []
    for path in sources():
        own = package_of(path)
        for name in imported_modules(path):
            part = part_of(name)
            if part is not None and part not in ALLOWED[own]:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []


def test_journeys_import_no_other_journey() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sources()
        if package_of(path) in JOURNEYS
        for name in imported_modules(path)
        if part_of(name) in JOURNEYS and part_of(name) != package_of(path)
    ]
    assert offenders == []


SUBPACKAGES = sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


def test_no_public_function_is_named_like_a_subpackage() -> None:
    """``import mti_lightning.X as m`` must give the package X, never a function of the API
    (the journeys live under ``journeys/`` for this)."""
    assert {"search", "atlas", "compare"} <= {
        node.name
        for node in ast.parse((ROOT / "api.py").read_text()).body
        if isinstance(node, ast.FunctionDef)
    }
    offenders = [
        f"{path.relative_to(ROOT)}: {node.name}"
        for path in sources()
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.FunctionDef) and node.name in SUBPACKAGES
    ]
    assert offenders == []
