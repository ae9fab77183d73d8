"""Freed memory kept in the heap: large blocks come from the heap inside, and a repeated
large allocation stops faulting pages in."""

from __future__ import annotations

import resource

import pytest
import torch

from mti_lightning.core.heap import heap_reuse_available, keep_freed_memory

pytestmark = pytest.mark.skipif(not heap_reuse_available(), reason="needs glibc")

GIB = 2**30
PAGES = 64 * 2**20 // 4096  # a 64 MB block


def _faults_per_allocation(n: int = 4, warmup: int = 8) -> float:
    """Minor page faults per allocate-fill-free of a 64 MB tensor, after ``warmup`` of them
    (the heap needs a few rounds before a freed block fits the next aligned request)."""
    for _ in range(warmup):
        torch.ones(PAGES * 1024)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.ones(PAGES * 1024)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / n


def test_large_blocks_come_from_the_heap_inside_only(served_by_mmap) -> None:
    assert served_by_mmap(3 * GIB)
    with keep_freed_memory() as active:
        assert active
        assert not served_by_mmap(1 * GIB)
        assert _faults_per_allocation() < PAGES / 50
    assert served_by_mmap(4 * GIB)  # restored on the way out


def test_nested_users_keep_it_until_the_last_leaves(served_by_mmap) -> None:
    with keep_freed_memory():
        with keep_freed_memory():
            pass
        assert not served_by_mmap(1 * GIB + 4096)
    assert served_by_mmap(5 * GIB)


def test_disabled_does_nothing(served_by_mmap) -> None:
    with keep_freed_memory(enabled=False) as active:
        assert not active
        assert served_by_mmap(6 * GIB)
