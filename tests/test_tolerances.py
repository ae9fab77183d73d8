"""The shared tolerance helpers on cases whose answer is known: a reordered float32 sum passes,
a real difference fails, and rankings may swap only items that tie within the tolerance."""

from __future__ import annotations

import pytest
import torch
from tolerances import ALL, EPS32, REORDERED, assert_reordered, assert_same_ranking


def test_each_tolerance_has_its_reason_and_stays_above_float32_rounding() -> None:
    for name, tol in ALL.items():
        assert tol.why, name
    for name in ("REORDERED", "NETWORK", "TRAJECTORY", "TF32", "BFLOAT16"):
        assert ALL[name].rtol > 10 * EPS32, name


def test_a_sum_in_another_order_passes_and_a_changed_sum_fails() -> None:
    terms = torch.rand(10_000, generator=torch.Generator().manual_seed(0)) - 0.4
    whole = terms.sum()
    chunked = torch.stack([c.sum() for c in terms.split(7)]).sum()
    assert_reordered(chunked, whole, scale=float(terms.abs().sum()))
    with pytest.raises(AssertionError):
        assert_reordered(whole + 1e-3 * terms.abs().sum(), whole, scale=float(terms.abs().sum()))


def test_the_absolute_part_follows_the_terms_not_the_result() -> None:
    # a difference of large terms near 0: its rounding is that of the terms
    assert_reordered(torch.tensor([3e-4]), torch.tensor([0.0]), scale=100.0)
    with pytest.raises(AssertionError):
        assert_reordered(torch.tensor([3e-4]), torch.tensor([0.0]), scale=1.0)


def test_rankings_may_swap_ties_only() -> None:
    tie = 1.0 + REORDERED.rtol / 4
    assert_same_ranking(["a", "b", "c"], ["b", "a", "c"], [tie, 1.0, 0.5], [tie, 1.0, 0.5])
    with pytest.raises(AssertionError, match="beyond ties"):
        assert_same_ranking(["a", "b", "c"], ["a", "c", "b"], [1.0, 0.8, 0.5], [1.0, 0.8, 0.5])
    # the top of longer rankings: the last tie group may hold items beyond the cut
    assert_same_ranking(["a", "b"], ["a", "z"], [1.0, 0.5], [1.0, 0.5], truncated=True)
