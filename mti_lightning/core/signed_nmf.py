"""Signed NMF of attributions: the E+ and E- parts of a unit's attribution over a data set,
each split into ``k`` non-negative components (scikit-learn's ``NMF``).

The matrix of a part is images x channels: each image's attribution summed over positions,
``relu(A)`` for E+ and ``relu(-A)`` for E- (the data pass's per-channel sums). A component is a
channel direction (its weights, unit L2 norm) and one coefficient per image; its share of the
part is the fraction of the part's total (L1) energy its rank-one term carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mti_lightning.core.errors import MTIConfigError

PARTS = ("plus", "minus")


@dataclass
class PartNMF:
    """One part's factorisation ``X ~ coefficients @ weights``: ``weights`` ``(k, C)`` unit
    rows, ``coefficients`` ``(N, k)``, each component's ``share`` of the part's energy, and the
    fraction of ``X``'s Frobenius norm explained (``1 - |X - WH| / |X|``)."""

    weights: np.ndarray
    coefficients: np.ndarray
    share: np.ndarray
    explained: float


def check_k(k: int | str, channels: int) -> None:
    """``k``: an int in ``[1, channels]`` or ``"auto"``; anything else is one clear error."""
    if k == "auto":
        return
    if isinstance(k, bool) or not isinstance(k, int):
        raise MTIConfigError(f"k={k!r}; give an integer in [1, {channels}] or 'auto'")
    if k < 1 or k > channels:
        raise MTIConfigError(
            f"k={k} but the attribution layer has {channels} channels; give 1 <= k <= {channels}"
            " or k='auto'"
        )


def check_parts(parts: list[str]) -> None:
    """``parts``: a non-empty subset of ``plus``, ``minus``."""
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts or len(set(parts)) != len(parts):
        raise MTIConfigError(f"parts={parts}; give one or both of {list(PARTS)}, each once")


def fit_part(x: np.ndarray, k: int, seed: int, max_iter: int = 1000) -> PartNMF:
    """NMF of the non-negative ``x`` ``(N, C)`` with ``k`` components (NNDSVDa start, seeded)."""
    from sklearn.decomposition import NMF

    x = np.asarray(x, dtype=np.float64)
    model = NMF(n_components=k, init="nndsvda", random_state=seed, max_iter=max_iter, tol=1e-6)
    w = model.fit_transform(x)
    h = model.components_
    norm = np.linalg.norm(h, axis=1)
    norm[norm == 0] = 1.0
    w, h = w * norm, h / norm[:, None]
    energy = w.sum(0) * h.sum(1)
    total = float(x.sum())
    share = energy / total if total > 0 else np.zeros(k)
    fro = float(np.linalg.norm(x))
    explained = 1.0 - float(np.linalg.norm(x - w @ h)) / fro if fro > 0 else 0.0
    order = np.argsort(-share, kind="stable")
    return PartNMF(h[order], w[:, order], share[order], explained)


def choose_k(x: np.ndarray, fraction: float, k_max: int, seed: int) -> int:
    """The smallest ``k <= k_max`` whose NMF explains at least ``fraction`` of ``x``'s
    Frobenius norm (``k_max`` when none does)."""
    for k in range(1, k_max + 1):
        if fit_part(x, k, seed).explained >= fraction:
            return k
    return k_max


def decompose_part(
    x: torch.Tensor | np.ndarray, k: int | str, fraction: float, k_max: int, seed: int
) -> PartNMF:
    """NMF of one part with ``k`` components, or (``k="auto"``) the smallest ``k`` reaching
    ``fraction`` of the Frobenius norm explained."""
    arr = x.double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    chosen = choose_k(arr, fraction, min(k_max, arr.shape[1]), seed) if k == "auto" else int(k)
    return fit_part(arr, chosen, seed)


def recurrence(weights: list[np.ndarray], seed: int = 0, shuffles: int = 20) -> tuple[float, float]:
    """Do components recur across units? For every ordered pair of different units, each
    component of the first's best cosine with the second's components, averaged (``weights``:
    one ``(k_u, C)`` array per unit); and the same with every component's channel entries
    shuffled (the baseline of unrelated directions with the same weight profile)."""

    def score(ws: list[np.ndarray]) -> float:
        unit = [w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12) for w in ws]
        best = [
            (a @ b.T).max(1).mean()
            for i, a in enumerate(unit)
            for j, b in enumerate(unit)
            if i != j
        ]
        return float(np.mean(best))

    rng = np.random.default_rng(seed)
    shuffled = [
        score([np.stack([rng.permutation(row) for row in w]) for w in weights])
        for _ in range(shuffles)
    ]
    return score(weights), float(np.mean(shuffled))
