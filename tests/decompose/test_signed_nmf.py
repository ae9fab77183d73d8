"""The NMF core: a matrix that is a known sum of k non-negative parts is recovered (components
matched by the Hungarian algorithm, cosine >= 0.99); k is checked; k='auto' finds k."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.signed_nmf import check_k, check_parts, decompose_part

COSINE_TOL = 0.99


def known_parts(k: int = 3, channels: int = 12, n: int = 200, seed: int = 0):
    rng = np.random.default_rng(seed)
    h = np.zeros((k, channels))
    for j in range(k):  # disjoint supports: identifiable
        h[j, j * (channels // k) : (j + 1) * (channels // k)] = rng.uniform(0.5, 1.5, channels // k)
    w = rng.exponential(1.0, (n, k)) * (rng.random((n, k)) < 0.6)
    return w @ h, h


def matched_cosines(found: np.ndarray, true: np.ndarray) -> np.ndarray:
    a = found / np.linalg.norm(found, axis=1, keepdims=True)
    b = true / np.linalg.norm(true, axis=1, keepdims=True)
    cos = a @ b.T
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols]


def test_known_sum_recovered():
    x, h = known_parts()
    part = decompose_part(x, 3, 0.99, 12, seed=0)
    assert part.weights.shape == (3, 12)
    assert matched_cosines(part.weights, h).min() >= COSINE_TOL
    assert part.explained >= 0.99
    assert abs(part.share.sum() - 1.0) < 1e-2


def test_auto_k_finds_the_number_of_parts():
    x, _ = known_parts(k=3)
    assert decompose_part(x, "auto", 0.99, 12, seed=0).weights.shape[0] == 3


@pytest.mark.parametrize("k", [0, -1, 13, 2.5, "three"])
def test_bad_k(k):
    with pytest.raises(MTIConfigError, match="k="):
        check_k(k, 12)


def test_bad_parts():
    with pytest.raises(MTIConfigError, match="parts="):
        check_parts(["minus", "other"])


def test_recurrence_against_shuffled():
    from mti_lightning.core.signed_nmf import recurrence

    base = np.eye(12)[:3] + 0.05
    same, shuffled = recurrence([base, base[::-1], base + 0.01], seed=0)
    assert same > 0.99 and shuffled < same
