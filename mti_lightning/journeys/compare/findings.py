"""What a comparison found, per architecture, in figures: the summary behind its report.

Per model: how many units of the layer are orientation tuned, where each tuned unit's tuning
curve has its minimum (least drive, which a single-peaked curve puts 67.5 to 90 degrees from
its peak by shape alone) beside where inhibition lies *measured as inhibition*
(``world/inhibition_tuning.py``: the orientation of largest E-, the preference of the channels
carrying E-, activation below the response to background-only images), each beside what an
orientation-blind unit gives, excitation and inhibition in data, which
measured units are never tense (zero ``E+`` or ``E-`` on every image: listed, never drawn at a
floor value), and how far the MTI search went beyond the tensest image of the data.
"""

from __future__ import annotations

from collections import Counter
from statistics import median
from typing import Any

import torch

from mti_lightning.journeys.compare.plan import Plan
from mti_lightning.journeys.compare.tuning import TUNED_R2, Tuning
from mti_lightning.world.inhibition_tuning import FAR_DEG

OFFSETS_DEG = (0.0, 22.5, 45.0, 67.5, 90.0)
SIGNIFICANT = 0.05  # share of orientation-blind draws at least as extreme
LEARNED_ACCURACY = 0.9  # held-out accuracy below which a trained network is flagged


def summarize(
    plan: Plan,
    tuning: Tuning,
    rows: list[dict[str, Any]],
    data: dict[str, torch.Tensor],
    training: dict[str, Any] | None,
) -> dict[str, Any]:
    """The findings of one model as plain values (for the text, the figure and W&B)."""
    mine = [r for r in rows if r["model"] == plan.name]
    tuned = tuning.tuned
    offsets = Counter(float(o) for o in tuning.offset_deg[tuned].tolist())
    ratios = [r["search_over_data"] for r in mine if r["search_over_data"] is not None]
    measured = [r for r in mine if r.get("e_minus_offset") is not None]
    result = (training or {}).get("result", {})
    return {
        "model": plan.name,
        "weights": plan.note,
        "layer": plan.layer,
        "position": plan.position,
        "channels": plan.n_channels,
        "tuned": int(tuned.sum()),
        "offsets": {o: offsets.get(o, 0) for o in OFFSETS_DEG},
        "measured": len(plan.units),
        "never_tense": [r["unit"] for r in mine if r["tension_max"] == 0],
        "inhibition": inhibition_summary(measured),
        "e_plus": float(data["e_plus"].mean()),
        "e_minus": float(data["e_minus"].mean()),
        "tension": float(data["tension"].mean()),
        "ratio": float(data["tension_ratio"].mean()),
        "searched": len(ratios),
        "search_over_data": ratios,
        "search_over_data_median": median(ratios) if ratios else None,
        "search_above_data": sum(1 for v in ratios if v > 1),
        "accuracy": result.get("held_out_accuracy"),
        "train_seconds": result.get("train_seconds"),
        "load_average": result.get("load_average"),
    }


def inhibition_summary(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Counts and medians of inhibition measured as inhibition over the tuned units that
    have it, each with its orientation-blind value; None when no unit has it."""
    if not rows:
        return None

    def med(key: str) -> float | None:
        values = [r[key] for r in rows if r.get(key) is not None and r[key] == r[key]]
        return median(values) if values else None

    return {
        "units": len(rows),
        "tuning_min_far": sum(1 for r in rows if r["inhibition_offset_deg"] >= FAR_DEG),
        "tuning_min_far_blind": sum(r["tuning_min_far_blind"] for r in rows),
        "e_minus_far": sum(1 for r in rows if r["e_minus_offset"] >= FAR_DEG),
        "e_minus_far_blind": sum(r["e_minus_far_blind"] for r in rows),
        "e_minus_selective": sum(1 for r in rows if r["e_minus_p"] < SIGNIFICANT),
        "carriers_offset": med("carriers_offset"),
        "carriers_offset_blind": med("carriers_offset_blind"),
        "excitors_offset": med("excitors_offset"),
        "suppressed": sum(
            1 for r in rows if r["suppression"] > 0 and r["suppression_p"] < SIGNIFICANT
        ),
        "suppression": med("suppression"),
        "suppression_blind": med("suppression_blind"),
    }


def inhibition_line(s: dict[str, Any]) -> str | None:
    """Where inhibition lies, measured as inhibition, beside the orientation-blind values."""
    m = s.get("inhibition")
    if not m:
        return None

    def deg(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    def num(v: float | None) -> str:
        return "-" if v is None else f"{v:.3g}"

    n = m["units"]
    return (
        f"{s['model']}, {n} tuned units measured: tuning minimum >= {FAR_DEG:g} deg from "
        f"preference in {m['tuning_min_far']} (orientation-blind: {m['tuning_min_far_blind']:.1f}"
        f"; any single-peaked curve: {n}, by shape); largest E- >= {FAR_DEG:g} deg from preference in {m['e_minus_far']} "
        f"(orientation-blind: {m['e_minus_far_blind']:.1f}), E- orientation-selective in "
        f"{m['e_minus_selective']} (shuffled labels p < {SIGNIFICANT:g}); channels carrying E- "
        f"prefer {deg(m['carriers_offset'])} deg from the unit's preference (median; "
        f"orientation-blind {deg(m['carriers_offset_blind'])}), those carrying E+ "
        f"{deg(m['excitors_offset'])} deg; driven below its background-only response in "
        f"{m['suppressed']} (median depth {num(m['suppression'])}, orientation-blind "
        f"{num(m['suppression_blind'])})"
    )


def finding_line(s: dict[str, Any]) -> str:
    """One sentence of figures for one model."""
    top = max(s["offsets"], key=lambda o: s["offsets"][o]) if s["tuned"] else None
    parts = [f"{s['model']} {s['layer']}: {s['tuned']} of {s['channels']} units tuned"]
    if top is not None:
        spread = ", ".join(f"{o:g}: {n}" for o, n in s["offsets"].items() if n)
        parts.append(
            f"tuning minimum {top:g} deg from preference in {s['offsets'][top]} "
            f"(offsets {spread}; least drive, not yet inhibition: see below)"
        )
    parts.append(
        f"in data (means over {s['measured']} units): E+ {s['e_plus']:.3g}, "
        f"E- {s['e_minus']:.3g}, tension {s['tension']:.3g}, ratio {s['ratio']:.2f}"
    )
    never = s["never_tense"]
    parts.append(
        f"{len(never)} never tense" + (f" (units {', '.join(map(str, never))})" if never else "")
    )
    if s["searched"]:
        parts.append(
            f"MTI search over data max: median {s['search_over_data_median']:.2f}, "
            f"above 1 in {s['search_above_data']} of {s['searched']}"
        )
    return "; ".join(parts)


def training_line(s: dict[str, Any]) -> str | None:
    """Held-out accuracy and training time of a model trained for the comparison."""
    if s["accuracy"] is None:
        return None
    load = s["load_average"]
    line = (
        f"{s['model']}: {100 * s['accuracy']:.1f}% held-out accuracy, trained in "
        f"{s['train_seconds']:.0f} s"
        + (f" (load average {load[0]:.1f} at the end)" if load else "")
    )
    if s["accuracy"] < LEARNED_ACCURACY:
        line += (
            f"; UNDERTRAINED (below {100 * LEARNED_ACCURACY:.0f}%): its units describe a network "
            "that has not learned the task; give it more steps (compare.recipes)"
        )
    return line


def findings_text(summaries: list[dict[str, Any]]) -> str:
    """The findings section: one line per model, then the training lines."""
    lines = [f"Findings (units tuned: R2 > {TUNED_R2}; offsets in degrees, orientation mod 180)"]
    lines += [f"- {finding_line(s)}" for s in summaries]
    measured = [t for t in map(inhibition_line, summaries) if t]
    if measured:
        lines.append(
            "Where inhibition lies, measured as inhibition (curves world; orientation-blind: "
            "the same statistic with the images' orientation labels shuffled, or the upstream "
            "channels' preferences permuted; expected counts):"
        )
        lines += [f"- {t}" for t in measured]
    trained = [t for t in map(training_line, summaries) if t]
    if trained:
        lines.append("Trained for this comparison (curves world, 64x64):")
        lines += [f"- {t}" for t in trained]
    return "\n".join(lines)
