"""The wheel users install (``pip install .``, as CI installs) holds the configs as the package
``mti_lightning.conf``, and the API finds the model group there as it does in the editable
install developers test (tests/test_api.py::test_the_model_group_is_found_in_this_editable_install)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    src = tmp_path_factory.mktemp("src")  # a copy: the build leaves build/ where it runs
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("conf", "mti_lightning"):
        shutil.copytree(ROOT / name, src / name, ignore=junk)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + [str(src), "-w", str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (path,) = out.glob("mti_lightning-*.whl")
    return path


def _where_and_model(path: Path, cwd: Path, prelude: str = "") -> tuple[list[str], str]:
    """In a fresh interpreter with ``path`` on ``PYTHONPATH``: the files of ``mti_lightning``
    and ``mti_lightning.conf`` it imports, and the model ``model=vit_tiny`` composes."""
    code = (
        prelude + "import mti_lightning, mti_lightning.conf as c\n"
        "from mti_lightning.face.api_config import _model_group, compose\n"
        "print(mti_lightning.__file__, c.__file__)\n"
        "print(_model_group('vit_tiny'), compose(['model=vit_tiny'])['model']['name'])\n"
    )
    env = dict(os.environ, PYTHONPATH=str(path))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]
    where, found = out.stdout.splitlines()[-2:]
    return where.split(), found


def test_the_wheel_holds_every_config_under_mti_lightning_conf(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in (ROOT / "conf").rglob("*.yaml"):
        assert f"mti_lightning/conf/{path.relative_to(ROOT / 'conf')}" in names, path
    assert "mti_lightning/conf/__init__.py" in names
    assert "mti_lightning/core/config_schema.py" in names
    assert not any(n.startswith("conf/") for n in names)


def test_the_wheel_holds_every_module_of_the_package(wheel):
    """Every module of the source tree is in the wheel (a package missing from pyproject's
    list installs silently without it)."""
    names = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / "mti_lightning"
    modules = {
        f"mti_lightning/{p.relative_to(source).as_posix()}"
        for p in source.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert modules - names == set()


def test_the_wheel_install_finds_the_model_group(wheel, tmp_path):
    """The wheel unpacked as pip installs it, imported ahead of this editable install."""
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    where, found = _where_and_model(site, tmp_path)
    assert where == [
        str(site / "mti_lightning" / "__init__.py"),
        str(site / "mti_lightning" / "conf" / "__init__.py"),
    ]
    assert found == "['model=vit_tiny'] vit_tiny_patch16_224"


def test_a_checkout_run_without_an_install_finds_its_configs(tmp_path):
    """From a source tree on ``PYTHONPATH`` (``benchmarks/gpu.sh``, ``python -m benchmarks.X``
    beside a wheel install), ``mti_lightning.conf`` is the checkout's ``conf/``
    (``mti_lightning/face/source_tree.py``). An editable install's own mapping is taken out first,
    so this runs as it does beside a wheel."""
    junk = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("conf", "mti_lightning"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=junk)
    unmapped = (
        "import sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in f.__module__]\n"
    )
    where, found = _where_and_model(tmp_path, tmp_path, unmapped)
    assert where == [
        str(tmp_path / "mti_lightning" / "__init__.py"),
        str(tmp_path / "conf" / "__init__.py"),
    ]
    assert found == "['model=vit_tiny'] vit_tiny_patch16_224"
