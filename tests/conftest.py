"""Shared fixtures: small random-init timm models (no downloads), seeded and on 2 threads."""

from __future__ import annotations

import atexit
import ctypes
import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable

import pytest
import torch
from torch import nn

from mti_lightning.core.models import LoadedModel, freeze, load_model

# a fresh inductor kernel cache for each session (its subprocesses inherit it): kernels an
# earlier run cached, for another CPU capability or another torch, are never loaded here
# (see core.compile_cache)
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="mti-tests-inductor-")
atexit.register(shutil.rmtree, os.environ["TORCHINDUCTOR_CACHE_DIR"], ignore_errors=True)

SIZE = 64  # side of the test images: timm ResNets take any size, 64 keeps the suite fast


@pytest.fixture(scope="session", autouse=True)
def _threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@torch.no_grad()
def randomize_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm random affine parameters and running statistics.

    timm's random init zero-initialises the last BN of each residual block, whose output is
    then identically zero; randomising makes every unit carry signal, so tests of values
    captured there (e.g. the in-place ``x += shortcut`` after ``bn2``) are not trivially true.
    """
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.copy_(0.5 + torch.rand(c, generator=gen))
            m.bias.copy_(0.2 * torch.randn(c, generator=gen))
            m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))


@pytest.fixture
def randomize() -> Callable[..., None]:
    """``randomize_batchnorms`` for tests that build their own networks."""
    return randomize_batchnorms


@pytest.fixture(scope="session")
def resnet() -> LoadedModel:
    """Random-init timm resnet18 with random BNs and fc bias, probed at 64x64 inputs."""
    torch.manual_seed(0)  # timm's random init draws from the global generator
    lm = load_model("resnet18")
    randomize_batchnorms(lm.model)
    with torch.no_grad():
        lm.model.fc.bias.copy_(torch.randn(lm.model.fc.bias.shape[0]))
    return dataclasses.replace(lm, input_size=(3, SIZE, SIZE))


@pytest.fixture(scope="session")
def vit() -> LoadedModel:
    """timm's tiny random-init ``test_vit`` (160x160 input, 6 blocks, 1 class token)."""
    torch.manual_seed(0)
    return load_model("test_vit")


@pytest.fixture
def images() -> Callable[..., torch.Tensor]:
    """Factory of seeded random images in [0, 1]: ``images(k, size=SIZE, seed=0)``."""

    def make(k: int, size: int | tuple[int, int] = SIZE, seed: int = 0) -> torch.Tensor:
        h, w = (size, size) if isinstance(size, int) else size
        return torch.rand(k, 3, h, w, generator=torch.Generator().manual_seed(seed))

    return make


@pytest.fixture
def wrap() -> Callable[..., LoadedModel]:
    """Factory wrapping a hand-built network as a frozen LoadedModel with identity normalisation."""

    def make(net: nn.Module, size: int = 16) -> LoadedModel:
        return LoadedModel(
            name="tiny",
            model=freeze(net),
            input_size=(3, size, size),
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            trained=False,
        )

    return make


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mmapped_bytes() -> int:
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblkhd


def _served_by_mmap(nbytes: int) -> bool:
    """Whether a tensor of ``nbytes`` (never touched: only address space) gets its own
    ``mmap``, as glibc does for large blocks unless told otherwise. Sizes differ per call
    so that no freed heap block of an earlier call can serve it."""
    before = _mmapped_bytes()
    block = torch.empty(nbytes // 4)
    grew = _mmapped_bytes() - before
    del block
    return grew >= nbytes


@pytest.fixture
def served_by_mmap() -> Callable[[int], bool]:
    """``nbytes -> whether glibc gave a fresh block of that size its own mmap``."""
    return _served_by_mmap
