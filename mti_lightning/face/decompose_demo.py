"""The decomposition demo in ``docs/``: ``docs/decompose.md`` and its figures, in one command.

    python -m mti_lightning.face.decompose_demo [--out docs] [--work outputs/decompose_demo]
        [--curves-n 300] [--imagenet]

1. CurveNet (built-in, trained): the signed NMF of unit ``bn2:19`` (attribution at ``pool1``,
   ``k=auto``) with a rendered image per component; then every unit of ``bn2`` with ``k=3``
   (no rendering), and whether the inhibitory components recur across units: the mean, over
   ordered pairs of units, of each E- component's best cosine with the other unit's E-
   components, against the same with every component's channel entries shuffled.
2. with ``--imagenet``: the same recurrence figure for units of ``efficientnet_lite0.imagenet``'s
   ``blocks.2`` over the offline photographs (``photos``).

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

FEATURED = 19
IMAGENET = "efficientnet_lite0.imagenet"


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
        "direction). Above the baseline: the same channel directions recur across the layer's "
        "units.",
        "",
    ]


def curvenet_section(args: argparse.Namespace, out: Path, work: Path) -> list[str]:
    start = time.perf_counter()
    r = mti.decompose(
        "curvenet",
        f"bn2:{FEATURED}@center",
        k="auto",
        logger=None,
        curves_n=args.curves_n,
        render_steps=args.render_steps,
        run_dir=work / "featured",
    )
    wall = time.perf_counter() - start
    shutil.copyfile(r.figure, out / f"decompose_curvenet_bn2_{FEATURED}.png")
    lines = [
        f"## CurveNet `bn2:{FEATURED}@center`",
        "",
        f"{r.record['n_images']} curve images, attribution at `{r.record['layer']}` "
        f"(16 channels), k = auto (the smallest k explaining 90% of each part's Frobenius "
        f"norm), {args.render_steps} render steps; {wall:.0f} s.",
        "",
        f"![components](decompose_curvenet_bn2_{FEATURED}.png)",
        "",
        "| part | # | share | explained | top channels | render cosine |",
        "|---|---|---|---|---|---|",
    ]
    for row in r.rows:
        lines.append(
            f"| E{'+' if row['part'] == 'plus' else '-'} | {row['component']} | "
            f"{100 * row['share']:.0f}% | {row['explained']:.2f} | {row['top_channels'][:3]} | "
            f"{row.get('render_cosine', float('nan')):.2f} |"
        )
    lines.append("")
    rec = _layer_recurrence(
        "curvenet", "bn2", list(range(32)), "curves", work / "layer", curves_n=args.curves_n
    )
    return lines + _recurrence_lines(rec, "CurveNet `bn2` (all 32)")


def imagenet_section(args: argparse.Namespace, work: Path) -> list[str]:
    rec = _layer_recurrence(
        IMAGENET,
        "blocks.2",
        list(range(args.imagenet_units)),
        f"photos:n={args.photos_n}",
        work / "imagenet",
    )
    return [
        "## efficientnet_lite0.imagenet `blocks.2`",
        "",
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
        lines += imagenet_section(args, args.work)
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
