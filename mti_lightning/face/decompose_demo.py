"""The decomposition demo in ``docs/``: ``docs/decompose.md`` and its figures, in one command.

    python -m mti_lightning.face.decompose_demo [--out docs] [--work outputs/decompose_demo]
        [--curves-n 300] [--imagenet]

1. CurveNet (built-in, trained): the signed NMF of unit ``bn2:19`` (attribution at ``pool1``,
   ``k=auto``) with a rendered image per component; then every unit of ``bn2`` with ``k=3``
   (no rendering), and whether the inhibitory components recur across units: the mean, over
   ordered pairs of units, of each E- component's best cosine with the other unit's E-
   components, against the same with every component's channel entries shuffled.
2. with ``--imagenet``: the same for ``efficientnet_lite0.imagenet``: unit ``blocks.2:0``
   (``k=4``, rendered) and the recurrence over units of ``blocks.2``, on the offline
   photographs (``photos``).

Under each featured unit, sentences computed from its numbers say what the components show
(the weight share of each component's top channel, the fraction explained, how close the
rendered images come to their direction), and under each layer whether its E- components
recur (their score against the shuffled baseline, beside E+'s).

Every decomposition goes through the public API (``mti.decompose``).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

import mti_lightning as mti
from mti_lightning.core.io import write_text
from mti_lightning.core.signed_nmf import recurrence
from mti_lightning.journeys.decompose.result import DecomposeResult

FEATURED = 19
IMAGENET = "efficientnet_lite0.imagenet"
IMAGENET_FEATURED = 0


def _layer_recurrence(
    model: str, layer: str, units: list[int], data: str, work: Path, **kw: Any
) -> dict[str, Any]:
    """k=3 decompositions of ``units`` of ``layer``; the recurrence of their E- and E+
    components against the shuffled baseline."""
    weights: dict[str, list[np.ndarray]] = {"plus": [], "minus": []}
    skipped, start = [], time.perf_counter()
    for u in units:
        try:
            r = mti.decompose(
                model,
                f"{layer}:{u}@center",
                data=data,
                k=3,
                render=False,
                logger=None,
                run_dir=work / f"{layer}_{u}",
                **kw,
            )
        except mti.MTIConfigError:  # no E- on the data
            skipped.append(u)
            continue
        for part in weights:
            weights[part].append(r.weights(part).numpy())
    out = {
        "n_units": len(units) - len(skipped),
        "skipped": skipped,
        "wall_s": time.perf_counter() - start,
    }
    for part, ws in weights.items():
        out[part] = recurrence(ws, seed=0)
    return out


def _recurrence_lines(rec: dict[str, Any], what: str) -> list[str]:
    m, p = rec["minus"], rec["plus"]
    return [
        f"Recurrence over {rec['n_units']} units of {what} (k = 3 per part; "
        f"{len(rec['skipped'])} units without E- left out: {rec['skipped']}; "
        f"{rec['wall_s']:.0f} s):",
        "",
        "| part | mean best cosine across units | shuffled baseline |",
        "|---|---|---|",
        f"| E- | {m[0]:.3f} | {m[1]:.3f} |",
        f"| E+ | {p[0]:.3f} | {p[1]:.3f} |",
        "",
        "Mean best cosine: for every ordered pair of different units, each component of the "
        "first unit's part matched to its most similar component of the second's, averaged; "
        "the baseline shuffles each component's channel entries (same weight profile, unrelated "
        "direction).",
        "",
        _recurrence_verdict(m, p, rec["n_units"]),
        "",
    ]


def _recurrence_verdict(minus: tuple[float, float], plus: tuple[float, float], n: int) -> str:
    """Whether the E- components recur across the units, in words, from the two numbers."""

    def above(score: tuple[float, float]) -> str:
        gap = score[0] - score[1]
        word = "clearly above" if gap > 0.1 else "a little above" if gap > 0.03 else "at"
        return f"{score[0]:.3f} against {score[1]:.3f} shuffled ({gap:+.3f}: {word} the baseline)"

    gap_m, gap_p = minus[0] - minus[1], plus[0] - plus[1]
    if gap_m > 0.03:
        claim = (
            "the inhibitory components recur: the layer's units share E- channel directions "
            "more than unrelated directions with the same weight profile would"
        )
    else:
        claim = "no sign that the inhibitory components recur across these units"
    compare = (
        "more than"
        if gap_m > gap_p + 0.03
        else "less than"
        if gap_m < gap_p - 0.03
        else "about as much as"
    )
    return (
        f"**Do the inhibitory components recur?** E-: {above(minus)}; {claim}. E+: "
        f"{above(plus)}, so over these {n} units E- recurs {compare} E+ does."
    )


def _span(values: list[float], fmt: str, unit: str = "") -> str:
    """``min-max (median m)`` of ``values`` in ``fmt``, each followed by ``unit``."""
    lo, hi, mid = min(values), max(values), float(np.median(values))
    return f"{lo:{fmt}}{unit}-{hi:{fmt}}{unit} (median {mid:{fmt}}{unit})"


def _what_components_show(r: DecomposeResult, top: dict[tuple[str, int], float]) -> str:
    """Plain sentences from the numbers: how concentrated the components are, how much of each
    part they explain, how well the rendered images reach their direction."""
    layer, n = r.record["layer"], len(r.rows)
    single = sum(1 for v in top.values() if v > 0.5)
    if single > n / 2:
        kind = f"most components are close to one channel of `{layer}`, not mixtures of several"
    elif single == 0:
        kind = "every component mixes several channels"
    else:
        kind = f"{single} are close to one channel, the other {n - single} mix several"
    counts = {p: sum(1 for x in r.rows if x["part"] == p) for p in r.record["parts"]}
    explained = {x["part"]: x["explained"] for x in r.rows}
    fits = " and ".join(
        f"{counts[p]} components for E{'+' if p == 'plus' else '-'} explain {explained[p]:.2f} "
        "of its Frobenius norm"
        for p in counts
    )
    text = (
        f"**What the components show.** {fits}. The top channel carries "
        f"{_span([100 * v for v in top.values()], '.0f', '%')} of a component's channel weight "
        f"(L1); {single} of {n} put more than half of it on one channel: {kind}."
    )
    cos = [x["render_cosine"] for x in r.rows if "render_cosine" in x]
    if cos:
        mid = float(np.median(cos))
        verdict = (
            "weak: the rendered images carry much besides their component; read them as "
            "hints, and the top data images as the evidence"
            if mid < 0.7
            else "moderate: the rendered images only partly isolate their component"
            if mid < 0.9
            else "close: the rendered images reach their component's direction"
        )
        text += (
            f" The rendered images reach their direction with a cosine of {_span(cos, '.2f')} "
            f"(position-summed activation at `{layer}` against the component's channel "
            f"weights; 1 is a perfect match): {verdict}."
        )
    return text


def featured_section(
    model: str,
    target: str,
    data: str,
    heading: str,
    about: str,
    out: Path,
    work: Path,
    k: int | str,
    steps: int,
    **kw: Any,
) -> list[str]:
    """One unit's decomposition (rendered): its figure, table and what it shows."""
    start = time.perf_counter()
    r = mti.decompose(
        model,
        target,
        data=data,
        k=k,
        logger=None,
        render_steps=steps,
        run_dir=work,
        **kw,
    )
    wall = time.perf_counter() - start
    name = f"decompose_{model.split('.')[0]}_{target.split('@')[0].replace(':', '_')}.png"
    shutil.copyfile(r.figure, out / name)
    top = {
        (part, j): float(w.max() / w.sum())
        for part in r.record["parts"]
        for j, w in enumerate(r.weights(part).numpy())
    }
    channels = r.weights(r.record["parts"][0]).shape[1]
    how_k = (
        "k = auto (the smallest k explaining 90% of each part's Frobenius norm)"
        if k == "auto"
        else f"k = {k} per part"
    )
    lines = [
        heading,
        "",
        f"{r.record['n_images']} {about}, attribution at `{r.record['layer']}` ({channels} "
        f"channels), {how_k}, {steps} render steps; {wall:.0f} s.",
        "",
        f"![components]({name})",
        "",
        "| part | # | share | explained | top channels | top channel's weight | render cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r.rows:
        lines.append(
            f"| E{'+' if row['part'] == 'plus' else '-'} | {row['component']} | "
            f"{100 * row['share']:.0f}% | {row['explained']:.2f} | {row['top_channels'][:3]} | "
            f"{100 * top[(row['part'], row['component'])]:.0f}% | "
            f"{row.get('render_cosine', float('nan')):.2f} |"
        )
    return [*lines, "", _what_components_show(r, top), ""]


def curvenet_section(args: argparse.Namespace, out: Path, work: Path) -> list[str]:
    lines = featured_section(
        "curvenet",
        f"bn2:{FEATURED}@center",
        "curves",
        f"## CurveNet `bn2:{FEATURED}@center`",
        "curve images",
        out,
        work / "featured",
        "auto",
        args.render_steps,
        curves_n=args.curves_n,
    )
    rec = _layer_recurrence(
        "curvenet", "bn2", list(range(32)), "curves", work / "layer", curves_n=args.curves_n
    )
    return lines + _recurrence_lines(rec, "CurveNet `bn2` (all 32)")


def imagenet_section(args: argparse.Namespace, out: Path, work: Path) -> list[str]:
    photos = f"photos:n={args.photos_n}"
    lines = featured_section(
        IMAGENET,
        f"blocks.2:{IMAGENET_FEATURED}@center",
        photos,
        f"## {IMAGENET} `blocks.2:{IMAGENET_FEATURED}@center`",
        "photo crops",
        out,
        work / "imagenet_featured",
        args.imagenet_k,
        args.imagenet_render_steps,
    )
    rec = _layer_recurrence(
        IMAGENET, "blocks.2", list(range(args.imagenet_units)), photos, work / "imagenet"
    )
    return [
        *lines,
        *_recurrence_lines(
            rec, f"`blocks.2` (units 0-{args.imagenet_units - 1}, {args.photos_n} photo crops)"
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    """Regenerate ``docs/decompose.md`` and its figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs"))
    parser.add_argument("--work", type=Path, default=Path("outputs/decompose_demo"))
    parser.add_argument("--curves-n", type=int, default=300)
    parser.add_argument("--render-steps", type=int, default=96)
    parser.add_argument("--imagenet", action="store_true")
    parser.add_argument("--imagenet-units", type=int, default=8)
    parser.add_argument("--photos-n", type=int, default=64)
    parser.add_argument("--imagenet-k", type=int, default=4)
    parser.add_argument("--imagenet-render-steps", type=int, default=48)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Decomposed attributions (signed NMF)",
        "",
        "Regenerate: `python -m mti_lightning.face.decompose_demo"
        + (" --imagenet" if args.imagenet else "")
        + "` (CPU).",
        "",
        "`mti.decompose` / `mti experiment=decompose` splits a unit's attribution at its "
        "attribution layer over a data set into E+ (`relu(A)`) and E- (`relu(-A)`) and factors "
        "each images x channels matrix (attribution summed over positions: channels only) with "
        "scikit-learn's NMF. Per component: its channel weights, its share of the part's energy, "
        "its top data images and an image rendered on the engine (cosine of the attribution "
        "layer's activation with the component's channel direction).",
        "",
        "Times are this run's wall-clock seconds (2-core CPU); a rerun into the same `--work` "
        "skips every finished stage, so it shows only what was left.",
        "",
    ]
    lines += curvenet_section(args, args.out, args.work)
    if args.imagenet:
        lines += imagenet_section(args, args.out, args.work)
    else:
        lines += [
            "## Left out",
            "",
            f"`{IMAGENET}` on the offline photographs was not run for this page "
            "(`--imagenet` runs it).",
            "",
        ]
    write_text(args.out / "decompose.md", "\n".join(lines))
    print(f"mti: wrote {args.out / 'decompose.md'}")


if __name__ == "__main__":
    main()
