"""docs/quality.md from the quality benchmarks' JSON results and saved images: the table
against lucent (``quality.json``), the MTI and inversion target rates at each setting
measured (``quality_mti.json``), a grid per setting with one row per depth (the tensest data
crop, the MTI, its + and - inversions, lucent's and our visualisation) and the targets missed,
by how much.

    python -m benchmarks.quality_report [--results benchmarks/results/cpu] [--images outputs/quality]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from PIL import Image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


TARGET_RATE, TARGET_COS = 0.9, 0.8
COLUMNS = (
    ("data", "tensest crop"),
    ("mti", "MTI"),
    ("plus", "+ inversion"),
    ("minus", "- inversion"),
)
METHODS = {
    "visualize": "ours: search=visualize",
    "mti": "ours: search=mti",
    "lucent": "torch-lucent render_vis",
}


def lucent_table(quality: dict) -> list[str]:
    """The markdown table of bench_quality's rows (one per method)."""
    lines = [
        "| method | units | value | robust (16 unseen views) | vs_data | high_freq | s per step per unit |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in quality["rows"]:
        lines.append(
            f"| {METHODS.get(r['method'], r['method'])} | {r['units']} | {r['value']:.3g} | "
            f"{r['robust']:.3g} | {r['vs_data']:.3g} | {r['high_freq']:.3f} | "
            f"{r['s_per_step_unit']:.3f} |"
        )
    return lines


def rates_table(mti: dict) -> list[str]:
    """The markdown table of bench_quality_mti's rows (one per setting)."""
    settings = mti["settings"]["settings"]
    lines = [
        "| setting | overrides | units | MTI / tensest crop >= 1 | median ratio | + raises and "
        "- lowers | + raises | - lowers | median cos +, - | cos >= 0.8 | CPU s per unit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in mti["rows"]:
        over = " ".join(f"`{o}`" for o in settings[r["setting"]]) or "(schema defaults)"
        lines.append(
            f"| {r['setting']} | {over} | {r['units']} | {r['over_data_ge_1']:.0%} | "
            f"{r['over_data_median']:.2f} | {r['signs_ok']:.0%} | {r['plus_raises']:.0%} | "
            f"{r['minus_lowers']:.0%} | {r['cos_plus_median']:.2f}, {r['cos_minus_median']:.2f} | "
            f"{r['cos_ge_08']:.0%} | {r['cpu_s_per_unit']:.0f} |"
        )
    return lines


def depth_table(mti: dict) -> list[str]:
    """Per setting and depth: the share of units at or over the data and the median ratio."""
    lines = [
        "| setting | layer | units | ratio >= 1 | median ratio | signs right | median cos +, - |"
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for r in mti["rows"]:
        layers = sorted({u["unit"].split(":")[0] for u in r["per_unit"]})
        for layer in layers:
            us = [u for u in r["per_unit"] if u["unit"].startswith(layer + ":")]
            ratios = [u["over_data"] for u in us]
            signs = sum(u["plus_raises"] and u["minus_lowers"] for u in us)
            lines.append(
                f"| {r['setting']} | {layer} | {len(us)} | {sum(x >= 1 for x in ratios)} | "
                f"{median(ratios):.2f} | {signs} | {median(u['cos_plus'] for u in us):.2f}, "
                f"{median(u['cos_minus'] for u in us):.2f} |"
            )
    return lines


def misses(mti: dict) -> list[str]:
    """One line per target and setting: met, or missed and by how much."""
    out = []
    for r in mti["rows"]:
        checks = (
            ("MTI tension >= tensest crop's", r["over_data_ge_1"], TARGET_RATE),
            ("+ raises and - lowers the unit from grey", r["signs_ok"], TARGET_RATE),
            (
                "inversions whose attribution cosine with their part is >= 0.8",
                r["cos_ge_08"],
                TARGET_RATE,
            ),
        )
        for name, got, want in checks:
            verdict = "met" if got >= want else f"missed by {100 * (want - got):.0f} points"
            out.append(f"- `{r['setting']}`: {name}: {got:.0%} (target {want:.0%}): {verdict}.")
    return out


def grid(mti: dict, setting: str, images: Path, out: Path) -> bool:
    """One figure for ``setting``: a row per depth (the first centre unit of each layer that
    bench_quality saved visualisations for), six columns. False when the images are missing."""
    folder = images / "quality_mti" / setting
    units = sorted(p.stem for p in (images / "quality" / "visualize").glob("*.png"))
    rows = [u for u in units if (folder / f"{u}_mti.png").is_file()]
    if not rows:
        return False
    per_unit = {u["unit"]: u for r in mti["rows"] if r["setting"] == setting for u in r["per_unit"]}
    columns = [*COLUMNS, ("lucent", "lucent visualisation"), ("visualize", "our visualisation")]
    fig, axes = plt.subplots(
        len(rows), len(columns), figsize=(2.1 * len(columns), 2.4 * len(rows)), squeeze=False
    )
    for i, name in enumerate(rows):
        layer, channel, kind = name.rsplit("_", 2)
        score = per_unit[f"{layer}:{channel}@{kind}"]
        notes = {
            "data": f"T {score['data_tension']:.3g}",
            "mti": f"T {score['tension']:.3g} ({score['over_data']:.2f}x)",
            "plus": f"f {score['plus_value']:.2g} (grey {score['grey']:.2g}) cos {score['cos_plus']:.2f}",
            "minus": f"f {score['minus_value']:.2g} cos {score['cos_minus']:.2f}",
        }
        for j, (key, title) in enumerate(columns):
            ax = axes[i][j]
            path = (
                folder / f"{name}_{key}.png"
                if key in notes
                else images / "quality" / key / f"{name}.png"
            )
            if path.is_file():
                ax.imshow(Image.open(path))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}\n{notes.get(key, '')}", fontsize=7)
            if j == 0:
                ax.set_ylabel(f"{layer}:{channel}@{kind}", fontsize=8)
    fig.suptitle(f"efficientnet_lite0.imagenet, setting {setting}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return True


def report(results: Path, images: Path, docs: Path) -> Path:
    """Write ``docs/quality.md`` and its grids; the path of the page."""
    quality = json.loads((results / "quality.json").read_text())
    mti = json.loads((results / "quality_mti.json").read_text())
    m, s = mti["machine"], mti["settings"]
    lines = [
        "# Picture quality on the real network (issue 32)",
        "",
        "Regenerate with `python -m benchmarks.quality_report` (from "
        f"`{_shown(results)}/quality.json`, `quality_mti.json` and the images the runs "
        f"saved under `{_shown(images)}`). "
        "Commands and the machine are in `benchmarks/RESULTS.md`.",
        "",
        "## Feature visualisation against torch-lucent",
        "",
        f"`{', '.join(quality['settings']['models'])}`, {quality['settings']['units']} units, "
        f"{quality['settings']['steps']} steps, {quality['settings']['canvas']} px, "
        f"{quality['settings']['draws']} draws (ours), `vs_data` against "
        f"`{quality['settings']['data']}` ({quality['machine']['date'][:10]}).",
        "",
        *lucent_table(quality),
        "",
        "## MTI search and its +/- inversions: the targets",
        "",
        f"`{s['model']}`, the same {s['units']} units (seed 0), {s['canvas']} px, draws "
        f"{s['draws']}; the tensest crop of `{s['data']}` by the census's data side; scores by "
        f"`benchmarks/tension_scores.py` ({m['date'][:10]}, {m['cpu']} x{m['cpu_count']}, "
        f"{m['threads']} threads, shared: load {m['load_average_start'][0]:g} at the start, "
        f"{m['load_average_end'][0]:g} at the end). CPU seconds: the search and its inversions, "
        "both threads, per unit.",
        "",
        *rates_table(mti),
        "",
        *depth_table(mti),
        "",
    ]
    for r in mti["rows"]:
        name = f"quality_grid_{r['setting']}.png"
        if grid(mti, r["setting"], images, docs / name) or (docs / name).is_file():
            lines += [f"![grid, setting {r['setting']}]({name})", ""]
    lines += [
        "Each row: one centre-position unit per depth. T: tension `min(E+, E-)` at the "
        "search's attribution layer; f: the unit's value, beside its value on a grey image.",
        "",
        "## Still not legible: the targets missed, and by how much",
        "",
        *misses(mti),
        "",
    ]
    page = docs / "quality.md"
    page.write_text("\n".join(lines))
    return page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "cpu")
    parser.add_argument("--images", type=Path, default=REPO / "outputs" / "quality")
    parser.add_argument("--docs", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    print(f"wrote {report(args.results.resolve(), args.images.resolve(), args.docs)}")


if __name__ == "__main__":
    main()
