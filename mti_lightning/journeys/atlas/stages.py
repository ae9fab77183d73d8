"""The stage runner: seven stages writing into one run directory, each skipped on resume when
its result exists and was made from the same config.

Every stage ``S`` writes ``<run_dir>/S/result.json`` last (atomically), holding a fingerprint:
a hash of the config fields ``S`` reads and the fingerprints of the stages it reads from (and,
for the dataset pass, the identity of the data: its file list). A stage whose recorded
fingerprint equals the current one is skipped; change an option and that stage and all below
it run again. ``stage=S`` runs (or re-runs) only ``S`` and needs its inputs up to date.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.io import load_tensors, save_png, save_tensors, write_json
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.token_grid import spatial_view
from mti_lightning.core.transforms import TransformConfig
from mti_lightning.journeys.atlas import (
    compose,
    dataset_pass,
    embedding,
    icons,
    scatter,
    selection,
    viewer,
)
from mti_lightning.journeys.atlas.config import AtlasConfig

STAGES = ("dataset_pass", "selection", "scatter", "embedding", "icons", "atlas", "viewer")
UPSTREAM: dict[str, tuple[str, ...]] = {
    "dataset_pass": (),
    "selection": ("dataset_pass",),
    "scatter": ("dataset_pass", "selection"),
    "embedding": ("dataset_pass", "selection"),
    "icons": ("dataset_pass", "selection", "embedding"),
    "atlas": ("icons",),
    "viewer": ("dataset_pass", "selection", "embedding", "icons", "atlas"),
}
FIELDS: dict[str, tuple[str, ...]] = {
    "dataset_pass": (
        "data",
        "data_root",
        "curves_n",
        "curves_seed",
        "curves_two_arc_fraction",
        "model",
        "pretrained",
        "checkpoint",
        "input_size",
        "feature",
        "layers",
        "shard_size",
        "store_maps",
        "crop_maps",
        "precision",
        "seed",
    ),
    "selection": tuple(selection.CRITERIA),
    "scatter": (),
    "embedding": (
        "umap_n_neighbors",
        "umap_min_dist",
        "umap_metric",
        "umap_n_epochs",
        "layout_clip",
        "seed",
    ),
    "icons": (
        "grid",
        "min_images",
        "icon_steps",
        "icon_lr",
        "icon_draws",
        "icon_power",
        "icon_inhibition_boost",
        "icon_canvas",
        "icon_scale_min",
        "icon_jitter",
        "icon_noise",
        "crop_icons",
        "split_icons",
        "seed",
    ),
    "atlas": ("atlas_size",),
    "viewer": ("viewer_thumbnails", "thumbnail_size", "searches"),
}


class AtlasRun:
    """One run directory, its config, its optional W&B logger, and lazily loaded inputs."""

    def __init__(
        self,
        cfg: AtlasConfig,
        run_dir: str | Path,
        logger: Any = None,
        lm: LoadedModel | None = None,
        dataset: Any = None,
    ):
        from lightning.pytorch.loggers import WandbLogger

        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.wandb = logger if isinstance(logger, WandbLogger) else None
        self.lm, self.dataset = lm, dataset

    @cached_property
    def setup(self) -> dataset_pass.PassSetup:
        return dataset_pass.prepare(self.cfg, self.run_dir, self.lm, self.dataset)

    def dir(self, stage: str) -> Path:
        return self.run_dir / stage

    def fingerprint(self, stage: str) -> str:
        """Hash of what ``stage``'s result depends on."""
        parts: dict[str, Any] = {
            "stage": stage,
            "fields": {f: getattr(self.cfg, f) for f in FIELDS[stage]},
            "upstream": {u: self.fingerprint(u) for u in UPSTREAM[stage]},
        }
        if stage == "dataset_pass":
            parts["source"] = self.setup.source.identity()
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def recorded(self, stage: str) -> dict[str, Any] | None:
        """The result ``stage`` last recorded, or None."""
        path = self.dir(stage) / "result.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def up_to_date(self, stage: str) -> bool:
        rec = self.recorded(stage)
        return rec is not None and rec.get("fingerprint") == self.fingerprint(stage)

    @property
    def shard_dir(self) -> Path:
        return self.dir("dataset_pass") / f"shards-{self.fingerprint('dataset_pass')[:12]}"

    @cached_property
    def results(self) -> dict[str, torch.Tensor]:
        """The dataset pass's per-image results, concatenated."""
        return dataset_pass.load_pass(self.shard_dir)

    def tensors(self, stage: str, name: str) -> dict[str, torch.Tensor]:
        return load_tensors(self.dir(stage) / name)

    def describe(self) -> str:
        c = self.cfg
        return f"{c.model} {c.feature}, attribution at {c.atlas_layer}"

    def log_image(self, key: str, path: Path, caption: str) -> None:
        if self.wandb is not None:
            self.wandb.log_image(key=key, images=[str(path)], caption=[caption])

    def rel(self, path: Path) -> str:
        return path.relative_to(self.run_dir).as_posix()


def _dataset_pass(run: AtlasRun) -> dict[str, Any]:
    out = dataset_pass.run_pass(run.setup, run.cfg, run.shard_dir)
    if out["rank"] == 0:
        out["shards"] = run.rel(run.shard_dir)
    return out


def _selection(run: AtlasRun) -> dict[str, Any]:
    picked = selection.select(run.results, run.cfg.atlas_layer, run.cfg.selection_sizes)
    path = save_tensors(run.dir("selection") / "selection.safetensors", picked)
    counts = {k: int(v.sum()) for k, v in picked.items() if k != "rows"}
    return {"n_selected": int(picked["rows"].numel()), "criteria": counts, "file": run.rel(path)}


def _scatter(run: AtlasRun) -> dict[str, Any]:
    layer, r = run.cfg.atlas_layer, run.results
    rows = run.tensors("selection", "selection.safetensors")["rows"]
    mask = np.zeros(r["activation"].numel(), dtype=bool)
    mask[rows.numpy()] = True
    path = scatter.tension_scatter(
        r[f"{layer}/e_plus"].numpy(),
        r[f"{layer}/e_minus"].numpy(),
        r["activation"].numpy(),
        mask,
        run.dir("scatter") / "tension_scatter.png",
        f"tension scatter\n{run.describe()}",
    )
    run.log_image("atlas/tension_scatter", path, run.describe())
    return {"figure": run.rel(path)}


def _embedding(run: AtlasRun) -> dict[str, Any]:
    cfg, r, layer = run.cfg, run.results, run.cfg.atlas_layer
    rows = run.tensors("selection", "selection.safetensors")["rows"]
    raw, reducer = embedding.fit(
        r[f"{layer}/vector"][rows].numpy(),
        cfg.umap_n_neighbors,
        cfg.umap_min_dist,
        cfg.umap_metric,
        cfg.umap_n_epochs,
        cfg.seed,
    )
    layout = embedding.normalise_layout(raw, cfg.layout_clip)
    lo, span = embedding.layout_bounds(raw, cfg.layout_clip)
    model = embedding.LayoutModel(reducer, lo, span, run.fingerprint("embedding"))
    embedding.save_layout_model(run.dir("embedding") / embedding.MODEL_FILE, model)
    save_tensors(
        run.dir("embedding") / "layout.safetensors",
        {"rows": rows, "raw": torch.from_numpy(raw), "layout": torch.from_numpy(layout)},
    )
    energy = (r[f"{layer}/e_plus"] + r[f"{layer}/e_minus"])[rows].numpy()
    fig = embedding.layout_figure(
        layout,
        r["activation"][rows].numpy(),
        energy,
        run.dir("embedding") / "layout.png",
        f"UMAP ({cfg.umap_metric}) of attribution vectors\n{run.describe()}",
    )
    run.log_image("atlas/embedding", fig, run.describe())
    return {
        "n_points": int(rows.numel()),
        "figure": run.rel(fig),
        "model": run.rel(run.dir("embedding") / embedding.MODEL_FILE),
    }


def _icons(run: AtlasRun) -> dict[str, Any]:
    cfg, r, layer, setup = run.cfg, run.results, run.cfg.atlas_layer, run.setup
    emb = run.tensors("embedding", "layout.safetensors")
    rows, layout = emb["rows"], emb["layout"].numpy()
    point_cells = icons.assign_cells(layout, cfg.grid)
    ids, counts = icons.occupied_cells(point_cells, cfg.min_images)
    if ids.size == 0:
        raise MTIConfigError(
            f"no grid cell holds min_images={cfg.min_images} of the {rows.numel()} selected "
            f"images on a {cfg.grid}x{cfg.grid} grid; lower min_images or grid"
        )
    window = tuple(run.recorded("dataset_pass")["window"])
    if cfg.store_maps:
        maps = r[f"{layer}/map"][rows]
        map_window = window if cfg.crop_maps else (0, maps.shape[2], 0, maps.shape[3])
    else:
        maps = dataset_pass.recompute_maps(
            setup, r["index"][rows].tolist(), layer, window, cfg.batch_size
        )
        map_window = window
    means = icons.cell_means(maps, point_cells, ids)
    view = spatial_view(setup.lm.model, setup.lm.input_size, layer, setup.shapes[layer])
    targets = icons.icon_targets(
        means, map_window, view.grid_shape, cfg.icon_inhibition_boost, cfg.split_icons
    )
    transform = TransformConfig(
        scale=(cfg.icon_scale_min, 1.0),
        jitter=cfg.icon_jitter,
        gaussian_noise=cfg.icon_noise,
    )
    start = time.perf_counter()
    rendered = icons.render_icons(
        setup.lm,
        setup.readout,
        view,
        targets,
        window,
        run.dir("icons"),
        canvas=cfg.icon_canvas or setup.lm.input_size[1],
        steps=cfg.icon_steps,
        lr=cfg.icon_lr,
        draws=cfg.icon_draws,
        power=cfg.icon_power,
        transform=transform,
        seed=cfg.seed,
        accelerator=cfg.accelerator,
        crop=cfg.crop_icons,
        fast_net=cfg.fast_net,
    )
    wall = time.perf_counter() - start
    cell_stats = {
        f"mean_{k}": icons.cell_means(v[rows].double(), point_cells, ids).float()
        for k, v in (
            ("activation", r["activation"]),
            ("e_plus", r[f"{layer}/e_plus"]),
            ("e_minus", r[f"{layer}/e_minus"]),
        )
    }
    save_tensors(
        run.dir("icons") / "icons.safetensors",
        {
            "images": rendered.images,
            "alpha": rendered.alpha,
            "crop": torch.tensor(rendered.crop),
            "activation": rendered.activation,
            "e_plus": rendered.e_plus,
            "e_minus": rendered.e_minus,
            "cells": torch.from_numpy(ids),
            "counts": torch.from_numpy(counts),
            "point_cells": torch.from_numpy(point_cells),
            **cell_stats,
        },
    )
    images, alpha = rendered.cropped()
    for k, cell in enumerate(ids):
        row, col = divmod(int(cell), cfg.grid)
        rgba = torch.cat([images[k], alpha[k][None]])
        save_png(run.dir("icons") / "png" / f"cell_{row:03d}_{col:03d}.png", rgba)
    return {
        "n_icons": int(ids.size),
        "n_rendered": int(rendered.images.shape[0]),
        "crop": list(rendered.crop),
        "render_wall_s": wall,
        "file": "icons/icons.safetensors",
    }


def _atlas(run: AtlasRun) -> dict[str, Any]:
    cfg = run.cfg
    t = run.tensors("icons", "icons.safetensors")
    h0, h1, w0, w1 = t["crop"].tolist()
    k = t["cells"].numel()
    images, alpha = t["images"][:k, :, h0:h1, w0:w1], t["alpha"][:k, h0:h1, w0:w1]
    activation = t["activation"][:k].numpy()
    board = compose.compose_atlas(
        images, alpha, t["cells"].numpy(), activation, cfg.grid, cfg.atlas_size
    )
    path = run.dir("atlas") / "atlas.png"
    save_png(path, torch.from_numpy(np.array(board)).permute(2, 0, 1).float() / 255)
    rows = []
    for i, cell in enumerate(t["cells"].tolist()):
        row, col = divmod(cell, cfg.grid)
        rows.append(
            {
                "cell": [row, col],
                "n_images": int(t["counts"][i]),
                "activation": float(t["activation"][i]),
                "e_plus": float(t["e_plus"][i]),
                "e_minus": float(t["e_minus"][i]),
                "mean_activation": float(t["mean_activation"][i]),
                "mean_e_plus": float(t["mean_e_plus"][i]),
                "mean_e_minus": float(t["mean_e_minus"][i]),
            }
        )
    write_json(run.dir("atlas") / "cells.json", rows)
    run.log_image("atlas/atlas", path, run.describe())
    if run.wandb is not None:
        import wandb

        from mti_lightning.shells.wandb_record import guarded

        columns = ["cell", *[c for c in rows[0] if c != "cell"], "icon"] if rows else []
        data = [
            [str(tuple(rec["cell"])), *[v for c, v in rec.items() if c != "cell"]]
            + [wandb.Image(compose.icon_rgba(images[i], alpha[i]))]
            for i, rec in enumerate(rows)
        ]
        guarded(run.wandb, "the atlas table", lambda wb: wb.log_table("atlas/cells", columns, data))
    return {"atlas": run.rel(path), "size": list(board.size), "cells": "atlas/cells.json"}


def _thumbs(run: AtlasRun, members: list[int]) -> list[dict[str, Any]]:
    r, layer, source = run.results, run.cfg.atlas_layer, run.setup.source
    out = []
    for row in members:
        index = int(r["index"][row])
        img = source.load(index)
        if img is None:
            continue
        out.append(
            {
                "src": viewer.png_data_uri(img, run.cfg.thumbnail_size),
                "name": source.name(index),
                "label": source.label(index),
                "activation": float(r["activation"][row]),
                "e_plus": float(r[f"{layer}/e_plus"][row]),
                "e_minus": float(r[f"{layer}/e_minus"][row]),
            }
        )
    return out


def _viewer(run: AtlasRun) -> dict[str, Any]:
    cfg = run.cfg
    fingerprint = run.recorded("embedding")["fingerprint"]
    searches = [
        viewer.search_markers(s, i, fingerprint, run.run_dir) for i, s in enumerate(cfg.searches)
    ]
    t = run.tensors("icons", "icons.safetensors")
    rows = run.tensors("embedding", "layout.safetensors")["rows"]
    act = run.results["activation"]
    h0, h1, w0, w1 = t["crop"].tolist()
    k = t["cells"].numel()
    point_cells = t["point_cells"]
    cells = []
    for i, cell in enumerate(t["cells"].tolist()):
        members = rows[point_cells == cell]
        members = members[torch.argsort(act[members], descending=True, stable=True)]
        icon = compose.icon_rgba(t["images"][i, :, h0:h1, w0:w1], t["alpha"][i, h0:h1, w0:w1])
        entry = {
            "row": cell // cfg.grid,
            "col": cell % cfg.grid,
            "n": int(t["counts"][i]),
            "icon": viewer.png_data_uri(icon, 112),
            "canvas": viewer.png_data_uri(t["images"][i], 112),
            **{
                key: float(t[key][i])
                for key in (
                    "activation",
                    "e_plus",
                    "e_minus",
                    "mean_activation",
                    "mean_e_plus",
                    "mean_e_minus",
                )
            },
            "thumbs": _thumbs(run, members[: cfg.viewer_thumbnails].tolist()),
        }
        if t["images"].shape[0] == 3 * k:
            for name, j in (("plus", k + i), ("minus", 2 * k + i)):
                entry[name] = viewer.png_data_uri(t["images"][j, :, h0:h1, w0:w1], 112)
        cells.append(entry)
    n_images = run.recorded("dataset_pass")["n_images"]
    path = viewer.write_viewer(
        run.dir("atlas") / "atlas.html",
        f"Attribution atlas: {run.describe()}",
        f"{n_images} images, {rows.numel()} selected, {k} icons on a {cfg.grid}x{cfg.grid} grid; "
        "border colour: the icon's own activation (red excites, blue inhibits)",
        run.dir("atlas") / "atlas.png",
        cfg.grid,
        cells,
        searches,
    )
    return {"viewer": run.rel(path), "searches": [s["path"] for s in searches]}


RUNNERS: dict[str, Callable[[AtlasRun], dict[str, Any]]] = {
    "dataset_pass": _dataset_pass,
    "selection": _selection,
    "scatter": _scatter,
    "embedding": _embedding,
    "icons": _icons,
    "atlas": _atlas,
    "viewer": _viewer,
}


def run_atlas(
    cfg: AtlasConfig,
    run_dir: str | Path,
    stage: str | None = None,
    logger: Any = None,
    lm: LoadedModel | None = None,
    dataset: Any = None,
) -> dict[str, dict[str, Any]]:
    """Run every stage not up to date (or only ``stage``) in ``run_dir``; return each stage's
    recorded result (with ``skipped`` true where it was up to date). ``logger``: an optional
    ``WandbLogger`` that receives the figures and the atlas table (other loggers are ignored);
    ``lm``: an already loaded model (``cfg.model`` then only names it); ``dataset``: a data set
    object instead of ``cfg.data``. Under DDP, processes other than rank 0 return after the
    dataset pass."""
    if stage is not None and stage not in STAGES:
        raise MTIConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    if "auto" in cfg.layers:
        lm = dataset_pass.load_atlas_model(cfg) if lm is None else lm
        cfg = dataset_pass.resolve_auto_layers(
            cfg, dataset_pass.with_input_size(lm, cfg.input_size)
        )
    run = AtlasRun(cfg, run_dir, logger, lm, dataset)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run.run_dir / "atlas_config.json", cfg.to_dict())
    results: dict[str, dict[str, Any]] = {}
    for name in STAGES if stage is None else (stage,):
        if stage is not None:
            stale = [u for u in UPSTREAM[name] if not run.up_to_date(u)]
            if stale:
                raise MTIConfigError(
                    f"stage {name} reads the results of {stale}, missing or made with another "
                    f"config in {run.run_dir}; run them first (no stage= runs all)"
                )
        elif run.up_to_date(name):
            results[name] = {**run.recorded(name), "skipped": True}
            continue
        start = time.perf_counter()
        out = RUNNERS[name](run)
        if out.get("rank", 0) != 0:
            return results
        record = {
            "stage": name,
            "fingerprint": run.fingerprint(name),
            "wall_s": time.perf_counter() - start,
            **out,
        }
        write_json(run.dir(name) / "result.json", record)
        results[name] = {**record, "skipped": False}
        print(f"atlas: {name} done in {record['wall_s']:.1f}s")
    return results
