"""Inductor kernels built under a forced CPU capability are cached apart from native ones:
torch 2.14.1 looks cached kernels up by graph only, and a native AVX-512 run that loads
kernels an ``ATEN_CPU_CAPABILITY=avx2`` run built crashes in glibc's heap checks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tolerances import NETWORK, assert_reordered

from mti_lightning.core.compile_cache import inductor_cache_dir

FORCED = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

SCRIPT = """
import torch
from torch import nn
from mti_lightning.core.compile_cache import compile_module
torch.manual_seed(0)
layers = [nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
layers += [nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU()]
layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)]
step = compile_module(nn.Sequential(*layers).eval().requires_grad_(False))
x = torch.rand(2, 3, 32, 32, requires_grad=True)
for _ in range(3):
    step(x)[:, 1].sum().backward()
print(float(x.grad.abs().sum()))
"""


@pytest.fixture
def bare_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("TORCHINDUCTOR_CACHE_DIR", *FORCED):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path


def test_native_kernels_use_the_default_cache(bare_env):
    assert inductor_cache_dir() is None


def test_a_forced_capability_names_its_own_cache(bare_env, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir reads TMPDIR again
    for name, value in FORCED.items():
        monkeypatch.setenv(name, value)
    path = Path(inductor_cache_dir())
    assert path.parent == bare_env
    assert path.name.startswith("torchinductor_") and "avx2" in path.name.lower()
    # torch's own default in the variable counts as unset; a directory the user chose is kept
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(path.parent / path.name.split("_aten")[0]))
    assert inductor_cache_dir() == str(path)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(bare_env / "mine"))
    assert inductor_cache_dir() is None


@pytest.mark.slow
def test_a_native_run_after_an_avx2_run_reads_its_own_kernels(tmp_path):
    """The two runs share a temporary directory, as two runs on one machine do; both finish,
    give the same gradient and leave two caches (they crashed with one)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TORCHINDUCTOR_CACHE_DIR", *FORCED)}
    env["TMPDIR"] = str(tmp_path)
    out = []
    for extra in (FORCED, {}):
        run = subprocess.run(
            [sys.executable, "-c", SCRIPT], env={**env, **extra}, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr[-2000:]
        out.append(float(run.stdout.split()[-1]))
    assert_reordered(torch.tensor(out[0]), torch.tensor(out[1]), tol=NETWORK)
    assert len(list(tmp_path.glob("torchinductor_*"))) == 2
