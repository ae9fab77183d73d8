"""The census demo of ``docs/census.md``, regenerated in one command through ``mti.census``.

    python -m mti_lightning.journeys.census.demo [--out outputs/census_demo] [--docs docs]

Two censuses, each in its own child process (so each part's wall time and peak memory are its
own): CurveNet, every unit of every layer over curve images, the search side on every unit; and
``efficientnet_lite0.imagenet`` on a seeded sample of units of two middle/late blocks over photo
crops, the search side on the top units with small CPU steps. For each, the by-depth figure, a
grid of the top units' search images, and headless-Chromium screenshots of the index and of the
first unit's page go under ``--docs``; the numbers go to stdout and ``--out/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mti_lightning.core.io import write_json
from mti_lightning.journeys.census.layout import read_optional, unit_dir, unit_slug

# part name -> (model, layers, data, census options); every setting the docs state
PARTS: dict[str, tuple[str, list[Any], str, dict[str, Any]]] = {
    "curvenet": (
        "curvenet",
        ["all"],
        "curves",
        {
            "curves_n": 2000,
            "batch_size": 256,
            "units_per_search": 48,
            "search.steps": 30,
            "search.draws": 1,
            "search.inversions.steps": 30,
            "search.inversions.draws": 1,
        },
    ),
    "imagenet": (
        "efficientnet_lite0.imagenet",
        ["blocks.4", "blocks.5"],
        "photos:n=256,crop=128,seed=0",
        {
            "units": 32,
            "batch_size": 32,
            "search_top_n": 8,
            "units_per_search": 8,
            "search.steps": 30,
            "search.draws": 1,
            "search.inversions.steps": 20,
            "search.inversions.draws": 1,
        },
    ),
}
# the columns of the top-units grid: (file stem under units/<slug>/, label)
GRID = (
    ("viz_plus", "+ viz"),
    ("viz_minus", "- viz"),
    ("mti", "MTI"),
    ("mti_plus", "MTI +inv"),
    ("mti_minus", "MTI -inv"),
    ("data", "tensest data"),
    ("data_plus", "data +inv"),
    ("data_minus", "data -inv"),
)
TOP = 8


def run_part(name: str, out: Path) -> None:
    """One census, into ``out/<name>`` (a fresh run each time)."""
    import mti_lightning as mti

    model, layers, data, options = PARTS[name]
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    mti.census(model, layers, data, run_dir=run_dir, logger=None, **options)


def timed_child(name: str, out: Path) -> dict[str, float]:
    """Run :func:`run_part` in a child process; its wall time and peak resident memory."""
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "mti_lightning.journeys.census.demo", "--child", name]
    proc = subprocess.Popen([*cmd, "--out", str(out)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"census demo: part {name} failed (exit {proc.returncode})")
    return {"seconds": time.perf_counter() - start, "peak_mb": usage.ru_maxrss / 1024}


def summarise(census_dir: Path) -> dict[str, Any]:
    """The numbers the docs quote: per layer the medians of the units' statistics and of
    search over data, and the top units."""
    table = json.loads((census_dir / "units.json").read_text())
    search = read_optional(census_dir, "search.json").get("units", {})
    rows = table["units"]
    layers = {}
    for layer in table["layers"]:
        mine = [r for r in rows if r["layer"] == layer["name"]]
        ranks = [r["rank"] for r in mine]
        sod = [search[r["spec"]]["search_over_data"] for r in mine if r["spec"] in search]
        layers[layer["name"]] = {
            "depth": layer.get("depth"),
            "units": len(mine),
            "best_rank": min(ranks),
            "median_rank": statistics.median(ranks),
            "tension_p90_median": statistics.median(r["tension_p90"] for r in mine),
            "ratio_mean_median": statistics.median(r["ratio_mean"] for r in mine),
            "frac_tense_median": statistics.median(r["frac_tense"] for r in mine),
            "searched": len(sod),
            "search_over_data_median": statistics.median(sod) if sod else None,
            "search_beats_data": sum(s > 1 for s in sod),
        }
    keys = ("rank", "spec", "tension_p90", "ratio_mean", "frac_tense", "act_mean")
    top = []
    for row in rows[:TOP]:
        entry = {k: row.get(k) for k in keys}
        entry["top_image"] = row["top"][0]["file"] if row.get("top") else None
        found = search.get(row["spec"], {})
        entry["search_tension"] = found.get("end_tension")
        entry["search_over_data"] = found.get("search_over_data")
        top.append(entry)
    return {"units": len(rows), "images": table.get("n_images"), "layers": layers, "top": top}


def grid_figure(census_dir: Path, path: Path) -> None:
    """The top searched units, one row each: their visualisations, MTI, inversions, tensest
    data image and its inversions, labelled with the unit's numbers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    search = read_optional(census_dir, "search.json").get("units", {})
    rows = [r for r in json.loads((census_dir / "units.json").read_text())["units"]]
    rows = [r for r in rows if r["spec"] in search][:TOP]
    fig, axes = plt.subplots(
        len(rows), len(GRID), figsize=(1.3 * len(GRID), 1.45 * len(rows)), squeeze=False
    )
    for i, row in enumerate(rows):
        folder = unit_dir(census_dir, row["spec"])
        for j, (stem, label) in enumerate(GRID):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            file = folder / f"{stem}.png"
            if file.is_file():
                ax.imshow(Image.open(file).convert("RGB").resize((96, 96)))
            if i == 0:
                ax.set_title(label, fontsize=8)
        found = search[row["spec"]]
        axes[i][0].set_ylabel(
            f"#{row['rank']} {row['spec'].split('@')[0]}\np90 {row['tension_p90']:.3g}"
            f"\ns/d {found['search_over_data']:.2f}",
            fontsize=6.5,
            rotation=0,
            ha="right",
            va="center",
        )
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=72)
    plt.close(fig)


def screenshot(page: Path, path: Path) -> None:
    """A headless-Chromium screenshot of ``page`` (a file of the site) into ``path``."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print(f"census demo: no chromium on PATH; {path.name} not taken", file=sys.stderr)
        return
    subprocess.run(
        [
            browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            f"--screenshot={path}", "--window-size=1200,900", page.resolve().as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


def small_png(path: Path, limit: int = 300_000) -> None:
    """Quantise ``path`` to a palette PNG of fewer colours until it is under ``limit`` bytes."""
    from PIL import Image

    for colors in (128, 64, 32):
        if not path.is_file() or path.stat().st_size <= limit:
            return
        with Image.open(path) as img:
            rgb = img.convert("RGB")
        rgb.quantize(colors=colors).save(path, optimize=True)


def figures(name: str, census_dir: Path, docs: Path) -> list[Path]:
    """The part's figures under ``docs``."""
    made = [
        docs / f"census_{name}_depth.png",
        docs / f"census_{name}_top.png",
        docs / f"census_{name}_index.png",
        docs / f"census_{name}_unit.png",
    ]
    shutil.copyfile(census_dir / "depth.png", made[0])
    grid_figure(census_dir, made[1])
    screenshot(census_dir / "index.html", made[2])
    first = json.loads((census_dir / "units.json").read_text())["units"][0]["spec"]
    screenshot(census_dir / "pages" / f"{unit_slug(first)}.html", made[3])
    for path in made:
        small_png(path)
    return [p for p in made if p.is_file()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/census_demo", help="the runs' folder")
    parser.add_argument("--docs", default="docs", help="where the figures go")
    parser.add_argument("--part", choices=sorted(PARTS), action="append", help="only these")
    parser.add_argument("--child", choices=sorted(PARTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out, docs = Path(args.out), Path(args.docs)
    if args.child:  # the measured process of one part
        run_part(args.child, out)
        return
    docs.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    for name in args.part or list(PARTS):
        cost = timed_child(name, out)
        census_dir = out / name / "census"
        summary[name] = {
            "settings": {k: v for k, v in zip(("model", "layers", "data", "options"), PARTS[name])},
            **cost,
            **summarise(census_dir),
            "figures": [str(p) for p in figures(name, census_dir, docs)],
        }
        print(json.dumps({name: summary[name]}, indent=1, default=str), flush=True)
    write_json(out / "summary.json", summary)


if __name__ == "__main__":
    main()
