"""The census's merge stage: the jobs' shards into one table per layer and one ranked table.

Idempotent and incremental: a layer's statistics are recomputed only when the shards they come
from (the fingerprints of the jobs holding its pieces) or the statistics' options changed;
``units.json`` and the by-depth figure only when a layer did. Every file is written atomically,
so a merge killed half-way leaves the last whole state, and running it again finishes it.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import save_tensors, write_json
from mti_lightning.journeys.census.context import CensusRun, fingerprint
from mti_lightning.journeys.census.figure import depth_figure
from mti_lightning.journeys.census.stats import rank, unit_rows
from mti_lightning.shells.data_pass import load_pass
from mti_lightning.shells.unit_pass import UNIT_KEYS


def _read(path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def unfinished_jobs(run: CensusRun) -> list[int]:
    """Jobs with pieces whose shards are missing or were made from another config."""
    out = []
    for job in range(run.c.jobs):
        if not run.job_pieces(job):
            continue
        rec = _read(run.job_dir(job) / "result.json")
        if rec is None or rec.get("fingerprint") != run.job_fingerprint(job):
            out.append(job)
    return out


def layer_file(run: CensusRun, layer: str):
    return run.dir / "data" / f"{layer}.safetensors"


def run_merge(run: CensusRun) -> dict[str, Any]:
    """Merge every job's shards; write ``units.json``, ``data/<layer>.safetensors`` and
    ``depth.png`` where their inputs changed."""
    c = run.c
    missing = unfinished_jobs(run)
    if missing:
        raise MTIConfigError(
            f"census merge: job(s) {missing} of census.jobs={c.jobs} have not finished with "
            f"this config; run them first (census.job=J census.jobs={c.jobs}, same layers, "
            "units and data)"
        )
    files = json.loads((run.dir / "files.json").read_text())
    job_of = {p.key: j for j in range(c.jobs) for p in run.job_pieces(j)}
    loaded: dict[int, dict[str, torch.Tensor]] = {}

    def shards(job: int) -> dict[str, torch.Tensor]:
        if job not in loaded:
            loaded[job] = load_pass(run.shard_dir(job))
        return loaded[job]

    stats = {"threshold": c.threshold, "top_k": c.top_k, "bins": c.hist_bins}
    all_rows, redone, counts = [], [], []
    for plan in run.plans:
        keys = [p.key for p in run.pieces if p.layer == plan.name]
        fp = fingerprint(
            {"jobs": [run.job_fingerprint(job_of[k]) for k in keys], "stats": stats,
             "files": len(files)}
        )
        cache = run.dir / "layers" / f"{plan.name}.json"
        rec = _read(cache)
        if rec is not None and rec["fingerprint"] == fp and layer_file(run, plan.name).is_file():
            all_rows.extend(rec["rows"])
            counts.append(rec["n_images"])
            continue
        parts = [shards(job_of[k]) for k in keys]
        tensors = {
            name: torch.cat([p[f"{k}/{name}"] for k, p in zip(keys, parts)], 1).float()
            for name in UNIT_KEYS
        }
        tensors["units"] = torch.tensor(plan.channels, dtype=torch.int64)
        tensors["index"] = parts[0]["index"].to(torch.int64)
        save_tensors(layer_file(run, plan.name), tensors)
        rows = unit_rows(
            plan.name, plan.attr_layer, c.position, plan.channels, tensors, files,
            c.threshold, c.top_k, c.hist_bins,
        )
        counts.append(int(tensors["index"].numel()))
        write_json(cache, {"fingerprint": fp, "n_images": counts[-1], "rows": rows})
        all_rows.extend(rows)
        redone.append(plan.name)
    n_images = counts[0]
    ranked = rank(all_rows, c.rank_by, [p.name for p in run.plans])
    table = {
        "model": run.lm.name,
        "data": str(c.data),
        "n_images": n_images,
        "threshold": c.threshold,
        "rank_by": c.rank_by,
        "position": c.position,
        "layers": [p.record() for p in run.plans],
        "units": ranked,
    }
    table_fp = fingerprint(table)
    record = _read(run.dir / "merge.json")
    written = record is None or record.get("fingerprint") != table_fp
    if written or not (run.dir / "units.json").is_file() or not (run.dir / "depth.png").is_file():
        write_json(run.dir / "units.json", table)
        depth_figure(table, run.dir / "depth.png")
        write_json(run.dir / "merge.json", {"fingerprint": table_fp, "layers_redone": redone})
    return {
        "n_units": len(ranked),
        "n_images": n_images,
        "layers_redone": redone,
        "written": written,
        "units": str(run.dir / "units.json"),
    }
