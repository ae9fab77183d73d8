"""``torch.compile`` with the inductor's kernel cache kept apart per forced CPU capability.

Inductor caches the C++ kernels it builds under one directory per user and looks them up by
the graph, not by the vector instruction set it compiled for. A run forced onto other
kernels (``ATEN_CPU_CAPABILITY=avx2`` or ``ONEDNN_MAX_CPU_ISA`` on an AVX-512 CPU, as CI's
second pass does) therefore leaves kernels that a later native run loads and crashes in
(glibc: "malloc(): unaligned tcache chunk detected", torch 2.14.1). Each forced capability
gets its own cache directory; a directory the user set is left alone (torch sets the variable
to its default itself once anything imports the inductor, so the default counts as unset)."""

from __future__ import annotations

import getpass
import os
import re
import tempfile

import torch
from torch import nn

FORCING = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def inductor_cache_dir() -> str | None:
    """The cache directory this process's forced capability needs, or None (native kernels,
    or ``TORCHINDUCTOR_CACHE_DIR`` already set)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid_{os.getuid()}"
    default = os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(default):
        return None
    forced = [f"{name.lower()}={os.environ[name]}" for name in FORCING if os.environ.get(name)]
    if not forced:
        return None
    return default + "_" + re.sub(r"[^A-Za-z0-9_.=-]", "_", "_".join(forced))


def compile_module(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``, its kernels cached apart when the CPU capability is forced."""
    path = inductor_cache_dir()
    if path is not None:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = path
    return torch.compile(model)
