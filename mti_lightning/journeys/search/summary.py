"""The summary of a search: a printed table and a figure grid (image, + inversion,
- inversion, with the figures under each; for a unit read at one position, the same again
cropped to its effective receptive field, the row's ``rf_effective`` box)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mti_lightning.core.receptive_field import Box


def _f(v: float | None, width: int = 8) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.3f}"


def summary_rows(
    features: Sequence[str],
    start: dict[str, torch.Tensor],
    end: dict[str, torch.Tensor],
    inversions: dict[str, torch.Tensor] | None = None,
) -> list[dict[str, float | str | None]]:
    """One record per image: feature, start/end activation and energies, inversion figures."""
    rows = []
    for k, feat in enumerate(features):
        row: dict[str, float | str | None] = {"image": k, "feature": feat}
        for when, m in (("start", start), ("end", end)):
            for key in ("activation", "e_plus", "e_minus", "tension", "tension_ratio"):
                row[f"{when}_{key}"] = float(m[key][k]) if key in m else None
        if inversions:
            row["plus_activation"] = float(inversions["plus_activation"][k])
            row["minus_activation"] = float(inversions["minus_activation"][k])
            for key in ("grid_e_plus", "grid_e_minus", "prefix_e_plus", "prefix_e_minus"):
                if key in inversions:  # a transformer layer: the class token's own share
                    row[f"inversion_{key}"] = float(inversions[key][k])
        rows.append(row)
    return rows


def format_table(rows: list[dict]) -> str:
    """Aligned text table of :func:`summary_rows`."""
    head = (
        f"{'#':>3} {'feature':<22} {'act0':>8} {'act':>8} {'E+':>8} {'E-':>8} "
        f"{'T0':>8} {'T':>8} {'ratio':>8} {'+inv':>8} {'-inv':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['image']:>3} {r['feature']:<22} {_f(r['start_activation'])} "
            f"{_f(r['end_activation'])} {_f(r['end_e_plus'])} {_f(r['end_e_minus'])} "
            f"{_f(r['start_tension'])} {_f(r['end_tension'])} {_f(r['end_tension_ratio'])} "
            f"{_f(r.get('plus_activation'))} {_f(r.get('minus_activation'))}"
        )
    return "\n".join(lines)


def _caption(r: dict) -> str:
    parts = [
        f"{r['feature']}",
        f"act {_f(r['start_activation'], 0)} -> {_f(r['end_activation'], 0)}",
    ]
    if r.get("end_e_plus") is not None:
        parts.append(f"E+ {r['end_e_plus']:.2f}  E- {r['end_e_minus']:.2f}")
        parts.append(
            f"T {r['start_tension']:.2f} -> {r['end_tension']:.2f} (ratio {r['end_tension_ratio']:.2f})"
        )
    return "\n".join(parts)


def row_box(row: dict) -> Box | None:
    """The row's effective receptive field as a box, or None (no ``rf_effective`` column)."""
    b = row.get("rf_effective")
    if not b:
        return None
    return Box(b["top"], b["left"], b["height"], b["width"], tuple(b["input"]))


def figure_png(
    rows: list[dict],
    images: torch.Tensor,
    inversions: dict[str, torch.Tensor] | None = None,
    title: str = "",
) -> bytes:
    """The summary figure as PNG bytes: one row per image (image, + inversion, - inversion)
    with its figures below."""
    import io

    from matplotlib.figure import Figure  # not pyplot: a notebook's backend is left alone

    boxes = [row_box(r) for r in rows]
    per = 3 if inversions else 1
    cols = per * (2 if any(b is not None for b in boxes) else 1)
    n = len(rows)
    fig = Figure(figsize=(2.8 * cols, 3.9 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    for k, r in enumerate(rows):
        panels = [(images[k], _caption(r))]
        if inversions:
            panels.append((inversions["plus"][k], f"+ inversion\nact {r['plus_activation']:.3f}"))
            panels.append((inversions["minus"][k], f"- inversion\nact {r['minus_activation']:.3f}"))
        if boxes[k] is not None:
            px = f"{r['rf_effective_px']} px of {r['rf_theoretical_px']}"
            panels += [(boxes[k].crop(img), f"cropped: receptive field\n{px}") for img, _ in panels]
        for ax in axes[k][len(panels) :]:
            ax.axis("off")
        for j, (img, text) in enumerate(panels):
            ax = axes[k][j]
            ax.imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(text, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()
