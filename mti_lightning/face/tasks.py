"""The tasks the ``mti`` command can run, each a pipeline taking the resolved config and the
run directory. Imports are lazy so ``mti`` starts only what the chosen task needs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError


def search_extras(cfg: MTIConfig) -> dict[str, Any]:
    """The callbacks the face adds to a search: the atlas placement ``callbacks.atlas`` asks
    for (the search journey does not import the atlas journey)."""
    if not cfg.callbacks.atlas:
        return {}
    from mti_lightning.journeys.atlas.callback import atlas_callback

    return {"atlas": atlas_callback}


def _search(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.search.job import run_search

    run_search(cfg, run_dir, extra=search_extras(cfg))


def _curves(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.world.curve_dataset import write_image_folder
    from mti_lightning.world.curves import CurveConfig

    c = cfg.curves
    out = Path(c.out or run_dir / "curves")
    write_image_folder(out, c.n, c.seed, CurveConfig(), c.two_arc_fraction)
    print(f"mti: wrote {c.n} curve images to {out} (ImageFolder layout, labels.csv)")


def _train(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.world.train_job import run_training

    record = run_training(cfg, run_dir)
    if record is not None:
        r, name, out = record["result"], cfg.model.name, record["weights"]
        print(
            f"mti: {name} weights {out} (record {Path(out).with_suffix('.yaml')}); held-out "
            f"accuracy {r['held_out_accuracy']:.4f} after {r['steps']} steps, "
            f"{r['train_seconds']} s; load with model.name={name} model.checkpoint={out}"
        )


def _toys(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.world.toy_analysis import run_toy, summary_text
    from mti_lightning.world.train_toys import ToyConfig

    t = cfg.toys
    kinds = ("abs", "xor") if t.kind == "all" else (t.kind,)
    for kind in kinds:
        toy = ToyConfig(kind=kind, n=t.n, m=t.m, sparsity=t.sparsity, steps=t.steps, seeds=t.seeds)
        analysis = run_toy(run_dir, toy, restarts=t.restarts, mti_steps=t.mti_steps)
        print(f"toy {kind}: {run_dir / f'toy_{kind}_tension'}.csv/.txt/.png")
        print(summary_text(analysis.rows))


def _curvenet_report(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.shells.engine import EngineOptions
    from mti_lightning.world.curvenet_report import run_report

    r = cfg.report
    options = EngineOptions.from_config(cfg)
    print(run_report(run_dir, r.layer, r.units, r.steps, r.n_images, options))


def _compare(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.compare.run import run_compare
    from mti_lightning.journeys.search.job import run_search_job

    run_compare(cfg, run_dir, run_search_job)


def _aggregate(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.compare.aggregate import run_aggregate

    run_aggregate(cfg, run_dir)


def _atlas(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.atlas.face import atlas_from_config

    atlas_from_config(cfg, run_dir)


def _census(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.census import run_census

    run_census(cfg, run_dir)


def _circuit(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.circuit.run import run_circuit

    run_circuit(cfg, run_dir)


def _decompose(cfg: MTIConfig, run_dir: Path) -> None:
    from mti_lightning.journeys.decompose.run import run_decompose

    run_decompose(cfg, run_dir)


TASKS: dict[str, Callable[[MTIConfig, Path], None]] = {
    "search": _search,
    "curves": _curves,
    "train": _train,
    "toys": _toys,
    "curvenet_report": _curvenet_report,
    "compare": _compare,
    "aggregate": _aggregate,
    "atlas": _atlas,
    "census": _census,
    "circuit": _circuit,
    "decompose": _decompose,
}


# removed tasks: the error names what replaced them
GONE_TASKS = {
    "train_curvenet": "mti experiment=train model=curvenet (the shipped weights' recipe)",
}


def run_task(name: str, cfg: MTIConfig, run_dir: Path) -> None:
    """Run task ``name``; an unknown or removed name is a clear error."""
    if name in GONE_TASKS:
        raise MTIConfigError(f"experiment={name} is gone; use {GONE_TASKS[name]}")
    if name not in TASKS:
        raise MTIConfigError(f"task {name!r}; valid: {', '.join(TASKS)}")
    TASKS[name](cfg, run_dir)
