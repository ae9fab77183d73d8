"""The layered architecture holds: the core imports no Lightning, W&B or Hydra."""

from __future__ import annotations

import ast
from pathlib import Path

import mti_lightning.core

FORBIDDEN = ("lightning", "pytorch_lightning", "wandb", "hydra", "omegaconf")


def test_core_imports_no_lightning_wandb_or_hydra():
    root = Path(mti_lightning.core.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert len(files) > 10
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [(path.name, n) for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
