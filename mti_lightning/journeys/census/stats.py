"""The per-unit statistics of a census layer, from its per-image energies and activations.

For each unit, over the images: ``E+`` and ``E-`` means, tension ``min(E+, E-)`` (mean; 50th,
90th and 99th percentiles), tension ratio ``min/max`` (mean and the same percentiles),
``frac_tense`` (the share of
images whose tension exceeds ``threshold`` times the unit's mean ``max(E+, E-)``: inhibition
at least that share of the unit's usual drive, a scale-free test comparable across units and
layers), the activation's distribution (mean, 1st/50th/99th percentiles, a histogram) and the
``k`` tensest images.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from mti_lightning.core.attribution import tension_ratio


def _q(x: torch.Tensor, q: float) -> torch.Tensor:
    return torch.quantile(x.double(), q, dim=0).float()


def unit_rows(
    layer: str,
    attr_layer: str,
    position: str,
    channels: Sequence[int],
    tensors: dict[str, torch.Tensor],
    files: Sequence[str],
    threshold: float,
    top_k: int,
    bins: int,
) -> list[dict[str, Any]]:
    """One row per unit (``units.json``'s, without the rank). ``tensors``: ``e_plus``,
    ``e_minus``, ``activation`` ``(N, K)`` and ``index`` ``(N,)`` (the images' indices in the
    data set, whose names ``files`` holds)."""
    ep, em, act = (tensors[k].double() for k in ("e_plus", "e_minus", "activation"))
    tension = torch.minimum(ep, em)
    ratio = tension_ratio(ep, em)
    drive = torch.maximum(ep, em).mean(0)
    tense = (tension > threshold * drive).double().mean(0)
    cols = {
        "tension_mean": tension.mean(0),
        "tension_p50": _q(tension, 0.5),
        "tension_p90": _q(tension, 0.9),
        "tension_p99": _q(tension, 0.99),
        "ratio_mean": ratio.mean(0),
        "ratio_p50": _q(ratio, 0.5),
        "ratio_p90": _q(ratio, 0.9),
        "ratio_p99": _q(ratio, 0.99),
        "e_plus_mean": ep.mean(0),
        "e_minus_mean": em.mean(0),
        "frac_tense": tense,
        "act_mean": act.mean(0),
        "act_p01": _q(act, 0.01),
        "act_p50": _q(act, 0.5),
        "act_p99": _q(act, 0.99),
    }
    cols = {k: v.tolist() for k, v in cols.items()}
    k = min(top_k, tension.shape[0])
    top_t, top_i = tension.topk(k, dim=0)  # (k, K)
    index = tensors["index"].tolist()
    rows = []
    for j, unit in enumerate(channels):
        counts, edges = np.histogram(act[:, j].numpy(), bins=bins)
        top = [
            {
                "index": index[r],
                "file": files[index[r]],
                "tension": float(top_t[m, j]),
                "e_plus": float(ep[r, j]),
                "e_minus": float(em[r, j]),
                "activation": float(act[r, j]),
            }
            for m, r in enumerate(top_i[:, j].tolist())
        ]
        rows.append(
            {
                "layer": layer,
                "unit": int(unit),
                "spec": f"{layer}:{int(unit)}@{position}",
                "attr_layer": attr_layer,
                **{name: float(v[j]) for name, v in cols.items()},
                "act_hist": {"edges": edges.tolist(), "counts": counts.tolist()},
                "top": top,
            }
        )
    return rows


def rank(rows: list[dict[str, Any]], key: str, order: Sequence[str]) -> list[dict[str, Any]]:
    """``rows`` sorted by ``key`` (largest first; ties by layer order, then unit), each with
    its ``rank`` (1 = first) in front."""
    where = {name: i for i, name in enumerate(order)}
    ranked = sorted(rows, key=lambda r: (-r[key], where[r["layer"]], r["unit"]))
    return [{"rank": i + 1, **r} for i, r in enumerate(ranked)]
