"""The suite's float tolerances, in one place, each with the arithmetic that argues for it.

Two computations of the same maths agree bit for bit only where the arithmetic is the same:
the same kernels on the same shapes in the same order. Those tests compare exactly
(``torch.equal``, ``rtol=atol=0``). Everywhere else the order of a float32 sum changes:
chunking, sharding, batch size, DDP's all-reduce, the step network against the plain one,
and the kernels a CPU picks (AVX2 or AVX-512 widths block a sum differently). Re-associating
a sum of ``n`` terms moves it by at most ``~ n * eps * sum|terms|`` (``eps`` = 1.19e-7 in
float32); the blocked and pairwise sums of real kernels stay near ``log2(n) * eps`` of the
terms' size. A census unit sums up to ~10^4 terms (channels x kernel taps x positions), so
``14 * 1.2e-7 = 1.7e-6`` of the terms' magnitude, and a factor of ~5 for the few chained sums
of one layer gives ``REORDERED`` below. Measured: the census chunked vs whole differ by 1.4e-6
relative on an AMD EPYC (Zen 4) and under AVX2 kernels on a Xeon.

The absolute part scales with the size of the terms, not of the result: where a result is a
difference of large terms (an activation ``E+ - E-`` near 0, a tension of a silent unit) its
rounding is that of the terms. :func:`assert_reordered` therefore takes ``scale`` (default:
the largest magnitude in ``expected``) and allows ``atol = rtol * scale``.

Which comparisons use which: one layer's sums reordered (chunked or sharded passes, batch
against single, closed forms against backward passes, the fast network's probes) use
``REORDERED``; a whole network's forward and backward in another order (the fast network,
captum's backward, folded BatchNorms, the pinned steps checked on another CPU) ``NETWORK``;
searches of several steps whose rounding is carried forward (DDP against one process, the fast
network's search, two nodes) ``TRAJECTORY``; the CUDA and bf16 tests ``TF32`` and
``BFLOAT16``. Comparisons whose difference is not the order of sums (grid sampling against
interpolation, a numerical derivative, images read as 8-bit pixels) state their own bound
where they make it. Every other float comparison of the suite is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    """A relative tolerance, also applied to a scale as the absolute one; and why."""

    rtol: float
    why: str


EPS32 = torch.finfo(torch.float32).eps

REORDERED = Tolerance(
    1e-5,
    "one layer's fp32 sums in another order: ~log2(n) * eps of the terms, n <= 10^4, x5",
)
NETWORK = Tolerance(
    1e-4,
    "a whole network's forward and backward in another order: a layer's reordering "
    "(REORDERED) compounds over ~10 layers and their gradients",
)
TRAJECTORY = Tolerance(
    1e-3,
    "an optimisation of tens of steps in another order (DDP, fast network): each step's "
    "rounding (NETWORK) is carried into the next images and grows with the steps",
)
TF32 = Tolerance(
    1e-2,
    "CUDA convs and matmuls in TF32 (10-bit mantissa: 2^-11 = 5e-4 per product), compounded "
    "over a network's layers",
)
BFLOAT16 = Tolerance(
    5e-2,
    "bf16 autocast (8-bit mantissa: 2^-9 = 2e-3 per operation) through a conv and its backward",
)
FLOAT64_RECORD = Tolerance(
    1e-12,
    "the same float64 numbers after a JSON or server round trip (repr is exact; the margin "
    "is for the printed digits)",
)

ALL = {
    "REORDERED": REORDERED,
    "NETWORK": NETWORK,
    "TRAJECTORY": TRAJECTORY,
    "TF32": TF32,
    "BFLOAT16": BFLOAT16,
    "FLOAT64_RECORD": FLOAT64_RECORD,
}


def _tensor(x: object) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


def assert_reordered(
    actual: object,
    expected: object,
    *,
    tol: Tolerance = REORDERED,
    scale: float | None = None,
    msg: str | None = None,
) -> None:
    """Assert ``actual`` equals ``expected`` up to the rounding of a reordered computation:
    ``|a - e| <= tol.rtol * (|e| + scale)``, ``scale`` the magnitude of the terms (default the
    largest ``|expected|``)."""
    a, e = _tensor(actual), _tensor(expected)
    a = a.to(e.dtype) if a.dtype != e.dtype and e.is_floating_point() else a
    if scale is None:
        scale = float(e.abs().max()) if e.numel() else 0.0
    torch.testing.assert_close(
        a, e, rtol=tol.rtol, atol=tol.rtol * scale, check_dtype=False, msg=msg
    )


def reordered_atol(scale: float, tol: Tolerance = REORDERED) -> float:
    """The absolute tolerance for values whose terms are of size ``scale``."""
    return tol.rtol * float(scale)


def assert_same_ranking(
    ranked_a: list,
    ranked_b: list,
    values_a: list[float],
    values_b: list[float],
    *,
    truncated: bool = False,
    tol: Tolerance = REORDERED,
) -> None:
    """Two rankings of items by values computed in different orders agree, up to items whose
    values tie within the tolerance (a reordered sum may swap those).

    ``values_*`` are the sort keys in each ranking's order; they must agree position by
    position. ``truncated``: the rankings are the top of longer ones, so the last tie group
    may hold items from beyond the cut."""
    assert len(ranked_a) == len(ranked_b), (ranked_a, ranked_b)
    assert_reordered(values_b, values_a, tol=tol)
    scale = max((abs(v) for v in values_a), default=0.0)
    slack = 2 * tol.rtol * scale
    start = 0
    for end in range(1, len(values_a) + 1):
        if end < len(values_a) and abs(values_a[end] - values_a[end - 1]) <= slack:
            continue
        if not (truncated and end == len(values_a)):
            group_a, group_b = ranked_a[start:end], ranked_b[start:end]
            assert sorted(map(str, group_a)) == sorted(map(str, group_b)), (
                f"rankings differ beyond ties at {start}:{end}: {group_a} vs {group_b}"
            )
        start = end
