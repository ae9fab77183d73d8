"""The census's search side: for the chosen units of ``units.json``, MTI searches with many units
batched in one search, + and - feature visualisations, the MTI's +/- inversions and the +/-
inversions of each unit's tensest data image, all run by the one engine.

Units are grouped by their attribution layer (a search has one) and cut into chunks of at most
``units_per_search`` units, so a chunk fits memory; each chunk runs four optimisations through
``shells/search_run.py`` (the MTI search, whose inversion stage follows it; the inversions of
the data images; the + and the - visualisation). A chunk writes its PNGs under
``units/<slug>/`` (for a unit read at one position, each also cropped to the unit's effective
receptive field, ``*_rf.png``, ``core/receptive_field.py``; the record states the field in px)
and then its record ``search/chunk-<digest>.json``, atomically; a chunk whose
record exists is skipped, so a killed run rerun continues with the next chunk. ``search.json``
gathers the records, keyed by spec, with ``search_over_data`` (the end tension over the largest
tension the data side measured for that unit, from ``data/<layer>.safetensors``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from mti_lightning.core.config_schema import MTIConfig, SearchSchema
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import build_readout, parse_feature
from mti_lightning.core.io import save_png, write_json
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.receptive_field import receptive_fields
from mti_lightning.journeys.census.layout import (
    SEARCH_JSON,
    layer_values,
    read_json,
    read_units,
    unit_column,
    unit_dir,
)
from mti_lightning.shells.engine import EngineOptions
from mti_lightning.shells.images import ImageSource, open_source, source_name
from mti_lightning.shells.search_run import invert_images, run_stages

# the images a unit gets, by key of search.json's "images": file name in its folder
IMAGE_FILES = {
    "mti": "mti.png",
    "mti_plus": "mti_plus.png",
    "mti_minus": "mti_minus.png",
    "viz_plus": "viz_plus.png",
    "viz_minus": "viz_minus.png",
    "data": "data.png",
    "data_plus": "data_plus.png",
    "data_minus": "data_minus.png",
}


def crop_name(name: str) -> str:
    """The file of ``name``'s picture cropped to the unit's receptive field."""
    return name.removesuffix(".png") + "_rf.png"


@dataclass(frozen=True)
class SearchSideOptions:
    """What the search side does. ``config``: the search, inversion, parameterisation,
    transform, trainer and seed settings (the ``mti`` config's groups; its target, logger and
    kind are set here); ``top_n``: the first N units by rank (0: every unit of units.json);
    ``units_per_search``: the most units one search holds (more are split into chunks);
    ``data``/``data_root``: the census's image source, to read the tensest data images (None:
    the ``data`` that units.json names, opened as ``shells/images.open_source`` does)."""

    config: MTIConfig = field(default_factory=MTIConfig)
    top_n: int = 0
    units_per_search: int = 32
    data: Any = None
    data_root: str = ""

    def check(self) -> None:
        if isinstance(self.top_n, bool) or not isinstance(self.top_n, int) or self.top_n < 0:
            raise MTIConfigError(
                f"census.search_top_n={self.top_n!r}; give 0 (every unit) or a count >= 1"
            )
        per = self.units_per_search
        if isinstance(per, bool) or not isinstance(per, int) or per < 1:
            raise MTIConfigError(f"census.units_per_search={per!r}; give a count >= 1")


def chosen_rows(units: dict[str, Any], top_n: int) -> list[dict[str, Any]]:
    """The rows the search side covers: all of them, or the first ``top_n`` by rank."""
    rows = sorted(units["units"], key=lambda r: r["rank"])
    return rows[:top_n] if top_n else rows


def data_max_tension(census_dir: Path, rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per spec, the largest tension ``min(E+, E-)`` over the data set, from the data side's
    tensors; a clear error when a unit's layer or column is missing (before any search)."""
    out: dict[str, float] = {}
    by_layer: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_layer.setdefault(r["layer"], []).append(r)
    for layer, layer_rows in by_layer.items():
        values = layer_values(census_dir, layer)
        if values is None:
            raise MTIConfigError(
                f"{census_dir}/data/{layer}.safetensors is missing; the data side writes it "
                "(rerun the census's data side)"
            )
        tension = torch.minimum(values["e_plus"], values["e_minus"])
        for r in layer_rows:
            col = unit_column(values, r["unit"])
            if col is None:
                raise MTIConfigError(
                    f"unit {r['unit']} of {layer} is not in data/{layer}.safetensors "
                    f"(units {values['units'].tolist()[:8]}...); rerun the census's data side"
                )
            out[r["spec"]] = float(tension[:, col].max())
    return out


def chunks(rows: list[dict[str, Any]], per: int) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(attribution layer, rows)`` chunks: rows of one attribution layer, at most ``per``
    each, in rank order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["attr_layer"], []).append(r)
    return [(a, g[i : i + per]) for a, g in groups.items() for i in range(0, len(g), per)]


def chunk_config(cfg: MTIConfig, lm: LoadedModel, specs: list[str], attr_layer: str) -> MTIConfig:
    """The MTI search of one chunk: its units as the targets, one image each, no logger,
    snapshots, transparency or checkpoints (a chunk is redone whole)."""
    return replace(
        cfg,
        model=replace(cfg.model, name=lm.name),
        target=list(specs),
        search=replace(
            cfg.search, kind="mti", attribution_layer=attr_layer, image=None, images_per_target=1
        ),
        logger=replace(cfg.logger, kind="none"),
        callbacks=replace(
            cfg.callbacks, snapshot_steps=[], snapshot_every=0, transparency=False, atlas=None
        ),
        checkpoint=replace(cfg.checkpoint, every_n_steps=0, resume=False),
    )


def trade_line(cfg: MTIConfig) -> str | None:
    """One line saying what a search side cheaper than the defaults trades (None at or above
    them): the steps and draws it runs against the defaults, whose MTI and inversion rates on
    the ImageNet network ``docs/quality.md`` measures."""
    s, inv = cfg.search, cfg.search.inversions
    d = SearchSchema()
    ours = (s.steps, s.draws, inv.steps, inv.draws)
    defaults = (d.steps, d.draws, d.inversions.steps, d.inversions.draws)
    if all(a >= b for a, b in zip(ours, defaults)):
        return None
    return (
        "census search: {} steps x {} draws, inversions {} x {}: below the defaults ({} x {}, "
        "{} x {}), whose rates of searches above the tensest data image and of inversions of "
        "the right sign docs/quality.md measures; this run trades them for time"
    ).format(*ours, *defaults)


def settings_record(cfg: MTIConfig) -> dict[str, Any]:
    """What a chunk's results depend on besides its units (to tell a finished chunk that fits
    from one made with other settings)."""
    search = {k: v for k, v in asdict(cfg.search).items() if k != "image"}
    return {
        "seed": cfg.seed,
        "search": search,
        "param": asdict(cfg.param),
        "transform": asdict(cfg.transform),
        "precision": str(cfg.trainer.precision),
    }


def chunk_digest(specs: list[str], attr_layer: str, settings: dict[str, Any]) -> str:
    text = json.dumps({"specs": specs, "attr": attr_layer, **settings}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def same_file(a: str, b: str) -> bool:
    """Whether two names of a data image agree (one may carry the folder the other lacks)."""
    return a == b or a.endswith("/" + b) or b.endswith("/" + a)


def check_source(source: ImageSource, rows: list[dict[str, Any]]) -> None:
    """A clear error unless ``source`` holds each row's tensest image (``top[0]``) where the
    data side found it: the search side must read the census's own data."""
    for r in rows:
        if not r.get("top"):
            continue
        top = r["top"][0]
        index = int(top["index"])
        found = source.name(index) if 0 <= index < len(source) else None
        if found is None or not same_file(found, str(top["file"])):
            raise MTIConfigError(
                f"the census's tensest image of {r['spec']} is {top['file']!r} (image {index}), "
                f"but the image source holds {found or 'no image'!r} there; give the census's "
                "own data"
            )


def _tensest_images(
    source: ImageSource, rows: list[dict[str, Any]]
) -> tuple[torch.Tensor, list[int]]:
    """The tensest data image (``top[0]``) of each row that has one and decodes, and the
    positions of those rows."""
    images, kept = [], []
    for k, r in enumerate(rows):
        img = source.load(int(r["top"][0]["index"])) if r.get("top") else None
        if img is not None:
            images.append(img)
            kept.append(k)
    return (torch.stack(images) if images else torch.zeros(0)), kept


def run_chunk(
    census_dir: Path,
    cfg: MTIConfig,
    lm: LoadedModel,
    attr_layer: str,
    rows: list[dict[str, Any]],
    source: ImageSource,
    work_dir: Path,
) -> dict[str, dict[str, Any]] | None:
    """One chunk's optimisations; writes its units' PNGs and returns their entries (None on
    the processes other than rank 0 of a DDP run)."""
    specs = [r["spec"] for r in rows]
    base = chunk_config(cfg, lm, specs, attr_layer)
    run = run_stages(base, work_dir / "mti", lm, logger=False)
    search = run.prepared.search
    end = search.measured.get("end") or search.measure()
    pictures: dict[str, list[torch.Tensor | None]] = {k: [None] * len(rows) for k in IMAGE_FILES}
    pictures["mti"] = list(run.images.float().cpu())
    if run.inversions is not None:
        pictures["mti_plus"] = list(run.inversions["plus"].float().cpu())
        pictures["mti_minus"] = list(run.inversions["minus"].float().cpu())
    for key, kind in (("viz_plus", "visualize"), ("viz_minus", "visualize_neg")):
        viz_cfg = replace(base, search=replace(base.search, kind=kind))
        pictures[key] = list(run_stages(viz_cfg, work_dir / kind, lm, logger=False).images.cpu())
    data, kept = _tensest_images(source, rows)
    if kept:
        sub = [run.prepared.specs[k] for k in kept]
        prepared = replace(run.prepared, readout=build_readout(lm.model, lm.input_size, sub))
        options = EngineOptions.from_config(base)
        inv = invert_images(base, work_dir / "data", prepared, data, options)
        for j, k in enumerate(kept):
            pictures["data"][k] = data[j]
            pictures["data_plus"][k] = inv["plus"][j].float().cpu()
            pictures["data_minus"][k] = inv["minus"][j].float().cpu()
    if not run.trainer.is_global_zero:
        return None
    out: dict[str, dict[str, Any]] = {}
    for k, (r, rf) in enumerate(
        zip(rows, receptive_fields(lm, [parse_feature(r["spec"]) for r in rows]), strict=True)
    ):
        folder = unit_dir(census_dir, r["spec"])
        images, crops = {}, {}
        for key, name in IMAGE_FILES.items():
            img = pictures[key][k]
            if img is None:
                continue
            save_png(folder / name, img.clamp(0, 1))
            images[key] = folder.relative_to(census_dir).joinpath(name).as_posix()
            if not rf.effective.whole:
                save_png(folder / crop_name(name), rf.effective.crop(img).clamp(0, 1))
                crops[key] = folder.relative_to(census_dir).joinpath(crop_name(name)).as_posix()
        out[r["spec"]] = {
            "receptive_field": rf.as_dict(),
            "crops": crops,
            "end_tension": float(end["tension"][k]),
            "end_e_plus": float(end["e_plus"][k]),
            "end_e_minus": float(end["e_minus"][k]),
            "end_ratio": float(end["tension_ratio"][k]),
            "end_activation": float(end["activation"][k]),
            "images": images,
        }
    return out


def as_options(value: SearchSideOptions | MTIConfig | None) -> SearchSideOptions:
    if value is None:
        return SearchSideOptions()
    if isinstance(value, MTIConfig):
        return SearchSideOptions(config=value)
    return value


def run_search_side(
    census_dir: Path,
    lm: LoadedModel,
    options: SearchSideOptions | MTIConfig | None = None,
    source: ImageSource | None = None,
) -> None:
    """Run the search side of the census in ``census_dir`` (which holds the data side's
    ``units.json`` and ``data/``) on the model ``lm``; writes ``units/<slug>/*.png``, one
    record per chunk under ``search/`` and ``search.json``. ``options``: see
    :class:`SearchSideOptions` (an ``MTIConfig`` alone: its settings, every unit, the default
    chunk size); ``source``: the census's image source (else ``options.data`` or units.json's
    ``data`` is opened). Chunks already done are skipped; every check runs before the first
    search."""
    census_dir = Path(census_dir)
    opts = as_options(options)
    opts.check()
    units = read_units(census_dir)
    rows = chosen_rows(units, opts.top_n)
    if not rows:
        raise MTIConfigError(f"{census_dir}/units.json lists no units; nothing to search")
    data_max = data_max_tension(census_dir, rows)
    if source is None:
        data = opts.data if opts.data is not None else units.get("data")
        if source_name(data) is not None:
            raise MTIConfigError(
                f"the census's data is the built-in source {data!r}, which the search side "
                "cannot rebuild alone; pass the census's image source (source=...)"
            )
        source = open_source(data, tuple(lm.input_size[1:]), opts.data_root or None)
    check_source(source, rows)
    cfg = opts.config
    settings = settings_record(cfg)
    parts = chunks(rows, opts.units_per_search)
    trade = trade_line(cfg)
    if trade is not None:
        print(trade)
    if len(parts) > 1:
        print(
            f"census search: {len(rows)} units in {len(parts)} searches (at most "
            f"census.units_per_search={opts.units_per_search} units each, one attribution "
            "layer each)"
        )
    records: dict[str, dict[str, Any]] = {}
    rank_zero = True  # the processes other than rank 0 of a DDP search write nothing
    for k, (attr_layer, chunk_rows) in enumerate(parts):
        specs = [r["spec"] for r in chunk_rows]
        digest = chunk_digest(specs, attr_layer, settings)
        path = census_dir / "search" / f"chunk-{digest}.json"
        if path.is_file():
            records |= read_json(path)["units"]
            continue
        print(f"census search: chunk {k + 1} of {len(parts)}: {len(specs)} units at {attr_layer}")
        work = census_dir / "search" / "work" / f"chunk-{digest}"
        found = run_chunk(census_dir, cfg, lm, attr_layer, chunk_rows, source, work)
        if found is None:
            rank_zero = False
            continue
        write_json(path, {"specs": specs, "attr_layer": attr_layer, **settings, "units": found})
        shutil.rmtree(work, ignore_errors=True)
        records |= found
    if rank_zero:
        write_search_json(census_dir, units, rows, records, data_max)


def write_search_json(
    census_dir: Path,
    units: dict[str, Any],
    rows: list[dict[str, Any]],
    records: dict[str, dict[str, Any]],
    data_max: dict[str, float],
) -> None:
    """``search.json``: per spec, its rank, layer and unit, the search's end numbers, the data's
    largest tension and ``search_over_data``, and its images (paths relative to the census
    folder); rewritten only when its content changes."""
    table = {}
    for r in rows:
        found = records.get(r["spec"])
        if found is None:
            continue
        top = data_max[r["spec"]]
        table[r["spec"]] = {
            "rank": r["rank"],
            "layer": r["layer"],
            "unit": r["unit"],
            **{k: v for k, v in found.items() if k != "images"},
            "data_max_tension": top,
            "search_over_data": found["end_tension"] / top if top > 0 else None,
            "images": found["images"],
        }
    payload = {"model": units.get("model"), "data": units.get("data"), "units": table}
    path = Path(census_dir) / SEARCH_JSON
    if path.is_file() and read_json(path) == json.loads(json.dumps(payload)):
        return
    write_json(path, payload)
