"""Stage 2, selection: the union of top/bottom-k sets of images by activation and energies.

Criteria (each with its own k, 0 = off) combine as in the paper: top and bottom k by
activation, top k by attribution energy (L1 ``E+ + E-`` or L2 ``|A|``), top k by ``E+`` or by
``E-``, and top k by tension ``min(E+, E-)``. Ties break by image order, so the sample is a
pure function of the pass results.
"""

from __future__ import annotations

import torch

CRITERIA = (
    "top_activation",
    "bottom_activation",
    "top_l1",
    "top_l2",
    "top_e_plus",
    "top_e_minus",
    "top_tension",
)


def criterion_scores(results: dict[str, torch.Tensor], layer: str) -> dict[str, torch.Tensor]:
    """Per-image score of each criterion (larger = selected first) at the atlas ``layer``."""
    act = results["activation"]
    e_plus, e_minus = results[f"{layer}/e_plus"], results[f"{layer}/e_minus"]
    l2 = (results[f"{layer}/e_plus_l2"].square() + results[f"{layer}/e_minus_l2"].square()).sqrt()
    return {
        "top_activation": act,
        "bottom_activation": -act,
        "top_l1": e_plus + e_minus,
        "top_l2": l2,
        "top_e_plus": e_plus,
        "top_e_minus": e_minus,
        "top_tension": torch.minimum(e_plus, e_minus),
    }


def select(
    results: dict[str, torch.Tensor], layer: str, sizes: dict[str, int]
) -> dict[str, torch.Tensor]:
    """Rows of the pass results in the sample (``rows``, ascending) and, per criterion, a
    boolean mask over those rows of the images it picked."""
    scores = criterion_scores(results, layer)
    picked = {}
    for name, k in sizes.items():
        order = torch.sort(scores[name], descending=True, stable=True).indices
        picked[name] = order[: min(k, order.numel())]
    rows = torch.unique(torch.cat(list(picked.values())))
    out = {"rows": rows}
    for name, idx in picked.items():
        out[name] = torch.isin(rows, idx)
    return out
