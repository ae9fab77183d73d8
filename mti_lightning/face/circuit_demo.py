"""The circuit demos in ``docs/``: ``docs/circuits.md`` and its figures, in one command.

    python -m mti_lightning.face.circuit_demo [--out docs] [--work outputs/circuit_demo]
        [--imagenet] [--units 19,12,9,5] [--curves-n 1000] [--viz-steps 128]

1. CurveNet (built-in, trained): the circuits of the most orientation-tuned units of its middle
   layer (``bn2``, attribution at ``pool1``) over curve images (``mti.circuit``), each with
   its ablation and echo; then, for the same units, where their inhibition lies measured as
   inhibition (``world/inhibition_tuning.py``): do the channels carrying E- prefer the
   orthogonal orientation?
2. with ``--imagenet``: the circuits of two tuned units of ``efficientnet_lite0.imagenet``'s
   ``blocks.2`` (attribution at ``blocks.2:in``) over photo crops, with the upstream channels'
   preferences on arcs drawn for the block's receptive field (``world/stimuli.py``).

Every circuit goes through the public API; times are wall-clock seconds on the machine that
ran it (the CPU settings are stated in the page). A second run into the same ``--work``
reuses each circuit's data pass and visualisations, so its times are those of the rest.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import mti_lightning as mti
from mti_lightning.core.features import FeatureSpec
from mti_lightning.core.io import write_text
from mti_lightning.world.curve_dataset import CurveDataset, RenderedCurveDataset
from mti_lightning.world.inhibition_tuning import background_images, measure_units
from mti_lightning.world.stimuli import centred_arcs

CURVENET_UNITS = (19, 12, 9, 5)  # the most orientation-tuned units of bn2 (curvenet_report)
IMAGENET = "efficientnet_lite0.imagenet"
IMAGENET_UNITS = (16, 15)  # tuned units of blocks.2 (docs/imagenet_report.md)
TIME_NOTE = (
    "time (s): this run's wall time per circuit; a rerun into the same `--work` reuses each "
    "circuit's data pass and visualisations, so it shows the rest only."
)
IMAGENET_ARC_PX = 48  # the arcs' scale for blocks.2 (1.5 x its effective receptive field)


def _circuit(model: str, unit: str, data: str, work: Path, out: Path, name: str, **kw: Any):
    start = time.perf_counter()
    result = mti.circuit(model, unit, data=data, run_dir=work / name, logger=None, **kw)
    seconds = time.perf_counter() - start
    shutil.copyfile(result.figure, out / f"{name}.png")
    return result, seconds


def _fmt(v: float | None, spec: str = ".0f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def curvenet_section(args: argparse.Namespace, out: Path, work: Path) -> list[str]:
    units = [int(u) for u in args.units.split(",")]
    rendered = RenderedCurveDataset(CurveDataset(800, 7), num_workers=0)
    images, labels = rendered.images.float() / 255, rendered.labels
    lm = mti.load_model("curvenet")
    specs = [FeatureSpec("bn2", u, "center") for u in units]
    measured = measure_units(lm, specs, "pool1", images, labels, background_images(200, 7))
    lines = [
        "## CurveNet `bn2` (attribution at `pool1`)",
        "",
        "```bash",
        "python -m mti_lightning.face.circuit_demo",
        "```",
        "",
        f"Settings: {args.curves_n} curve images (`circuit.data=curves`, seed 4000, 30 % with "
        f"a second arc), k = {args.k}, the tensest 10 % for shares and ablation, 5 control "
        f"seeds, the echo on 800 single-arc images, visualisations {args.viz_steps} steps; "
        "one process on the CPU.",
        "",
        "| unit | preferred | top inhibitory channels (E- share) | their share | Spearman(w, A) "
        "| ablation rise: inhibitory / random k (mean, max) | echo at largest E- orientation: "
        "before -> after | E- carriers prefer (offset; blind) | E+ carriers (offset) | "
        "time (s) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    figures = []
    for u, m in zip(units, measured.measures):
        name = f"circuit_curvenet_bn2_{u}"
        result, seconds = _circuit(
            "curvenet", f"bn2:{u}@center", "curves", work, out, name,
            k=args.k, curves_n=args.curves_n, viz_steps=args.viz_steps,
        )
        r = result.record
        a, e = r["ablation"], r["echo"]
        shares = {row["channel"]: row["share_minus"] for row in result.rows}
        top = ", ".join(f"{c} ({100 * shares[c]:.0f}%)" for c in r["inhibitory"])
        echo = (
            f"{e['inhibiting_deg']:g} deg: {e['at_inhibiting_before']:+.2f} -> "
            f"{e['at_inhibiting_after']:+.2f}"
            if "skipped" not in e
            else e["skipped"]
        )
        lines.append(
            f"| {u} | {m.preferred_deg:g} | {top} | {100 * r['inhibitory_share']:.0f}% | "
            f"{r['spearman_weight_attribution']:+.2f} | {a['rise_inhibitory']:+.2f} / "
            f"{a['rise_control_mean']:+.2f} ({a['rise_control_max']:+.2f}) | {echo} | "
            f"{_fmt(m.carriers_deg)} ({_fmt(m.carriers_offset)}; {_fmt(m.carriers_offset_blind)}) "
            f"| {_fmt(m.excitors_offset)} | {seconds:.0f} |"
        )
        figures.append(f"![circuit of bn2:{u}]({name}.png)")
    prefs = measured.channel_pref_deg.tolist()
    r2 = measured.channel_r2.tolist()
    lines += [
        "",
        TIME_NOTE,
        "",
        "Upstream channels (`pool1`, read at the centre on the same single-arc images): "
        "preferred orientation (R2) "
        + ", ".join(f"{c}: {p:g} ({q:.2f})" for c, (p, q) in enumerate(zip(prefs, r2)))
        + ".",
        "",
        "Measured as inhibition on the same units (800 single-arc images; orientation-blind: "
        "shuffled labels or permuted channel preferences, 200 draws): "
        + "; ".join(
            f"bn2:{u} largest E- at {m.e_minus_deg:g} deg ({m.e_minus_offset:g} from "
            f"preference; blind {m.e_minus_offset_blind:.0f}), E- selectivity "
            f"{m.e_minus_selectivity:.2f} (blind {m.e_minus_selectivity_blind:.2f}), "
            f"{m.suppression:+.2f} below its background-only response at "
            f"{m.suppressed_deg:g} deg (blind {m.suppression_blind:+.2f})"
            for u, m in zip(units, measured.measures)
        )
        + ".",
        "",
        *figures,
        "",
    ]
    return lines


def imagenet_section(args: argparse.Namespace, out: Path, work: Path) -> list[str]:
    lm = mti.load_model(IMAGENET)
    images, labels, backgrounds = centred_arcs(8, IMAGENET_ARC_PX)
    specs = [FeatureSpec("blocks.2", u, "center") for u in IMAGENET_UNITS]
    measured = measure_units(lm, specs, "blocks.2:in", images, labels, backgrounds[:32], 16)
    lines = [
        f"## `{IMAGENET}` `blocks.2` (attribution at `blocks.2:in`)",
        "",
        "```bash",
        "python -m mti_lightning.face.circuit_demo --imagenet",
        "```",
        "",
        f"Settings: {args.photos_n} photo crops (`photos`), k = {args.k}, visualisations "
        f"{args.viz_steps} steps at 224 px; the upstream channels' preferences on 64 arcs "
        f"({IMAGENET_ARC_PX} px scale, centred, flat backgrounds; `world/stimuli.py`). The path "
        "from `blocks.2:in` to the unit is a whole inverted-residual block, so the echo "
        "(one convolution's weights) does not apply; the expanded weight is the block's "
        "linearised path.",
        "",
        "| unit | preferred | top inhibitory channels (E- share; channel preference) | "
        "Spearman(w, A) | ablation rise: inhibitory / random k | E- carriers prefer "
        "(offset; blind) | E+ carriers (offset) | time (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    prefs = measured.channel_pref_deg
    figures = []
    for u, m in zip(IMAGENET_UNITS, measured.measures):
        name = f"circuit_efficientnet_blocks2_{u}"
        result, seconds = _circuit(
            IMAGENET, f"blocks.2:{u}@center", f"photos:n={args.photos_n}", work, out, name,
            k=args.k, viz_steps=args.viz_steps, echo=False, batch_size=16,
        )
        r, a = result.record, result.record["ablation"]
        shares = {row["channel"]: row["share_minus"] for row in result.rows}
        top = ", ".join(
            f"{c} ({100 * shares[c]:.0f}%; {float(prefs[c]):g})" for c in r["inhibitory"]
        )
        lines.append(
            f"| {u} | {m.preferred_deg:g} | {top} | {r['spearman_weight_attribution']:+.2f} | "
            f"{a['rise_inhibitory']:+.2f} / {a['rise_control_mean']:+.2f} | "
            f"{_fmt(m.carriers_deg)} ({_fmt(m.carriers_offset)}; "
            f"{_fmt(m.carriers_offset_blind)}) | {_fmt(m.excitors_offset)} | {seconds:.0f} |"
        )
        figures.append(f"![circuit of blocks.2:{u}]({name}.png)")
    return [*lines, "", TIME_NOTE, "", *figures, ""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs")
    parser.add_argument("--work", default="outputs/circuit_demo")
    parser.add_argument("--units", default=",".join(map(str, CURVENET_UNITS)))
    parser.add_argument("--curves-n", type=int, default=1000)
    parser.add_argument("--photos-n", type=int, default=128)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--viz-steps", type=int, default=128)
    parser.add_argument("--imagenet", action="store_true")
    args = parser.parse_args(argv)
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    sections = curvenet_section(args, out, work)
    if args.imagenet:
        sections += imagenet_section(args, out, work)
    write_text(out / "circuits_demo.md", "\n".join(sections))
    print(f"mti: circuit demos in {out / 'circuits_demo.md'} and {out}/circuit_*.png")


if __name__ == "__main__":
    main()
