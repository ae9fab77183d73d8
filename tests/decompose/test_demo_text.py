"""The demo page's sentences follow the numbers: a recurrence at the shuffled baseline claims
nothing, one clearly above it says the inhibitory components recur."""

from __future__ import annotations

from mti_lightning.face.decompose_demo import _recurrence_verdict


def test_recurrence_verdict_follows_the_numbers():
    above = _recurrence_verdict((0.72, 0.45), (0.58, 0.38), 32)
    assert "the inhibitory components recur" in above and "+0.270: clearly above" in above
    assert "E- recurs more than E+" in above
    at = _recurrence_verdict((0.46, 0.45), (0.50, 0.38), 8)
    assert "no sign that the inhibitory components recur" in at and "+0.010: at" in at
    assert "E- recurs less than E+" in at
