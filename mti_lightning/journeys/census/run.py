"""The census as resumable stages in one directory: data (this job's share of the units over
the data set) -> merge (every job's shards into the ranked table) -> the search side -> the
site. Each stage skips what is up to date, so a rerun after a kill, or after a change of one
option, redoes only what that change touches.

With ``census.jobs=N`` each job ``census.job=J`` computes its pieces; the job that finds every
piece done merges (a merge twice is harmless: it is idempotent and atomic), and
``census.stage=merge`` merges on request.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.models import LoadedModel
from mti_lightning.journeys.census.circuits import circuit_record_path, gather_circuits
from mti_lightning.journeys.census.context import CensusRun
from mti_lightning.journeys.census.data import run_data
from mti_lightning.journeys.census.decompositions import gather_decompositions
from mti_lightning.journeys.census.layout import read_units
from mti_lightning.journeys.census.merge import run_merge, unfinished_jobs
from mti_lightning.journeys.census.result import CensusResult
from mti_lightning.journeys.census.search_side import SearchSideOptions, run_search_side
from mti_lightning.journeys.census.site import build_site
from mti_lightning.journeys.census.tracking import log_census
from mti_lightning.shells.wandb_record import finish_run


def search_side(run: CensusRun) -> dict[str, dict[str, Any]]:
    """The search side (``census.search``): batched MTI searches of the ranked units (the
    first ``census.search_top_n``, or all), their feature visualisations and inversions,
    through the one engine, after the merge; skipped chunks are those already done."""
    c = run.c
    if not c.search:
        return {}
    options = SearchSideOptions(
        config=run.cfg, top_n=c.search_top_n, units_per_search=c.units_per_search
    )
    run_search_side(run.dir, run.lm, options, run.source)
    return {"search": {"top_n": c.search_top_n, "units_per_search": c.units_per_search}}


def site(run: CensusRun) -> dict[str, dict[str, Any]]:
    """The static site (``census/index.html`` and a page per unit), then the W&B record (the
    census table, a summary per layer, the site as an artifact) where a W&B logger is set."""
    if not run.c.site:
        return {}
    specs = {r["spec"] for r in read_units(run.dir)["units"]}
    with_circuit = gather_circuits(run.dir, list(run.c.circuits), specs)
    gather_decompositions(run.dir, list(run.c.decompositions), specs)
    index = build_site(run.dir, images=getattr(run.source, "root", None))
    log_census(run.dir, run.logger)
    finish_run(run.logger)
    return {"site": {"index": str(index), "units_with_circuit": with_circuit}}


def run_census(
    cfg: MTIConfig,
    run_dir: str | Path,
    lm: LoadedModel | None = None,
    dataset: Any = None,
    logger: Any = None,
) -> CensusResult | None:
    """Run the census ``cfg`` describes into ``run_dir`` (or ``census.out``): data -> merge ->
    search side -> site. Every bad input fails before any work. ``logger``: a Lightning logger
    for the later stages (None: the one ``cfg.logger`` describes). Returns None on DDP
    processes other than the first."""
    from mti_lightning.shells.loggers import logger_from_config

    run = CensusRun(cfg, run_dir, lm, dataset)
    run.logger = logger if logger is not None else (logger_from_config(cfg, run.run_dir) or None)
    c = run.c
    run.plans  # noqa: B018  (layers, units and attribution layers checked first)
    run.source  # noqa: B018  (then the data: an empty data set fails here)
    for circuit_run in c.circuits:  # and the circuits to show: each must hold its record
        circuit_record_path(circuit_run)
    stages: dict[str, dict[str, Any]] = {}
    if c.stage in ("all", "data"):
        stages["data"] = run_data(run, c.job)
        if stages["data"].get("rank", 0) != 0:
            return None
        print(f"census job {c.job}/{c.jobs}: data stage done into {run.job_dir(c.job)}")
    result = CensusResult(run.run_dir, run.dir, stages)
    if c.stage == "data":
        return result
    if c.stage == "all" and unfinished_jobs(run):
        print(
            f"census: job(s) {unfinished_jobs(run)} of {c.jobs} still to finish; the last one "
            "merges (or run census.stage=merge)"
        )
        return result
    stages["merge"] = run_merge(run)
    stages.update(search_side(run))
    stages.update(site(run))
    print(f"mti: census of {stages['merge']['n_units']} units: {run.dir / 'units.json'}, "
          f"{run.dir / 'depth.png'}")
    return result
