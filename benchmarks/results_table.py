"""Turn a folder of benchmark JSON files into markdown: the machine, one table per benchmark
and the issue's targets with the measured figures (for pasting into RESULTS.md).

    python -m benchmarks.results_table OUTDIR [> tables.md]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import (
    bench_atlas_pass,
    bench_inversion,
    bench_mti,
    bench_scaling,
    bench_step_network,
    bench_units,
    profile_step,
    step_costs,
)
from benchmarks.common import fmt, table

ORDER = {
    "inversion": ("1. Inversion step rate", bench_inversion.COLUMNS),
    "mti": ("2. MTI search: exact vs linearized", bench_mti.COLUMNS),
    "units": ("3. Batched units", bench_units.COLUMNS),
    "atlas_pass": ("4. Atlas dataset pass", bench_atlas_pass.COLUMNS),
    "scaling": ("5. Scaling", bench_scaling.COLUMNS),
    "step_network": ("6. The step network across architectures", bench_step_network.COLUMNS),
    "profile": ("Profiler check (per step)", profile_step.COLUMNS),
    "step_costs": ("The fixed cost of a step, part by part", step_costs.COLUMNS),
}


def machine_line(data: dict[str, Any]) -> str:
    m = data["machine"]
    where = m.get("gpu") or f"{m['cpu_count']}-core CPU ({m['cpu']}), {m['threads']} threads"
    return (
        f"{m['date']} on {where}; torch {m['torch']}, Lightning {m['lightning']}, "
        f"timm {m['timm']}; load average {m['load_average_start']} -> {m['load_average_end']}"
        + ("; --quick" if data.get("quick") else "")
    )


def targets(found: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target of issue 7 with the figure measured for it and whether it is met."""
    on_gpu = any(d["machine"]["device"] == "cuda" for d in found.values())
    rows: list[dict[str, Any]] = []

    def add(target: str, value: float, met: bool | None, where: str) -> None:
        rows.append({"target": target, "measured": value, "met": met, "row": where})

    inversion = found.get("inversion", {})
    emulated = not on_gpu and not inversion.get("machine", {}).get("cpu_bf16", True)
    for r in inversion.get("rows", []):
        where = f"{r['model']} {r['canvas']}px {r['draws']} draws {r['precision']}"
        need, ratio = (4.0 if on_gpu else 1.5), r["ours_vs_faccent"]
        if emulated and r["precision"] == "bf16":
            add(f"inversion >= {need}x faccent", ratio, None, f"{where} (bf16 emulated here)")
        else:
            add(f"inversion >= {need}x faccent", ratio, ratio >= need, where)
        if on_gpu:
            ratio = r["ours_time_vs_bare"]
            add("inversion time <= 1.25x bare", ratio, ratio <= 1.25, where)
    for r in found.get("atlas_pass", {}).get("rows", []):
        if r.get("ours_vs_faccent") is not None:
            where = f"{r['data']} {r['precision']} batch {r['batch']}"
            need, ratio = (20.0 if on_gpu else 2.0), r["ours_vs_faccent"]
            add(f"atlas pass >= {need}x faccent", ratio, ratio >= need, where)
    for r in found.get("units", {}).get("rows", []):
        if r.get("speedup") is not None:
            met = r["speedup"] >= 10 if on_gpu else None  # a GPU target
            add("batched units >= 10x one-by-one (GPU)", r["speedup"], met, r["how"])
    for r in found.get("profile", {}).get("rows", []):
        calls = r["grid_sample_per_step"]
        add("1 grid_sample per step", calls, calls == 1, r["kind"])
        add("host syncs per step", r["syncs_per_step"], None, f"{r['kind']}: {r['sync_sites']}")
    for r in found.get("step_costs", {}).get("rows", []):
        if r["part"] == "ours time / network":
            add("ours time / network (issue 23)", r["ms_per_step"], None, r["model"])
    return rows


def main() -> None:
    folder = Path(sys.argv[1])
    found = {
        p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem in ORDER
    }
    if not found:
        sys.exit(f"no benchmark JSON in {folder}")
    for name, (title, columns) in ORDER.items():
        if name not in found:
            continue
        print(f"### {title}\n\n{machine_line(found[name])}\n")
        print(table(found[name]["rows"], columns) + "\n")
    rows = targets(found)
    for r in rows:
        r["met"] = {True: "yes", False: "NO", None: ""}[r["met"]]
        r["measured"] = fmt(r["measured"])
    print("### Targets\n")
    print(table(rows, ["target", "measured", "met", "row"]))


if __name__ == "__main__":
    main()
