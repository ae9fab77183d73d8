"""Decomposed attributions of one unit, from the composed config of the ``mti`` command or the
Python API (``mti experiment=decompose``, ``mti.decompose``): the same function for both.

Every bad input fails first, in one line (unit, layer, ``k`` outside ``[1, channels]``,
``parts``, a data set without images). Then three resumable stages into ``<run_dir>``, each
writing ``decompose/<stage>/result.json`` last (atomically) with a fingerprint of what it read;
a rerun skips every stage whose fingerprint is unchanged:

1. ``data_pass``: the engine's one data pass (``shells/data_pass.py``: sharded, resumable, DDP)
   with per-channel sums of ``relu(A)`` and ``relu(-A)`` at the layer, the matrices images x
   channels that the NMF reads (channels only: positions are summed). A unit never inhibited
   in the data stops here, saying to decompose E+ only (``parts=[plus]``);
2. ``nmf``: each part's NMF (``core/signed_nmf.py``): channel weights, share, top images;
3. ``render``: an image per component on the engine (``render.py``), then the figure,
   ``decompose/components.json`` and, with ``logger=wandb``, a W&B table and artifact.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch

import mti_lightning.world  # noqa: F401  (registers the built-in world's data sets)
from mti_lightning.core.attribution import attribute
from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout, build_readout
from mti_lightning.core.io import load_tensors, save_png, save_tensors, write_json
from mti_lightning.core.layer_choice import attribution_layer_auto, one_feature
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import layer_shapes
from mti_lightning.core.signed_nmf import check_k, check_parts, decompose_part
from mti_lightning.core.token_grid import spatial_view
from mti_lightning.journeys.decompose.figure import components_figure
from mti_lightning.journeys.decompose.render import render_components
from mti_lightning.journeys.decompose.result import DecomposeResult
from mti_lightning.shells.data_pass import PassOptions, PassSetup, load_pass, run_pass
from mti_lightning.shells.images import ImageSource, SourceRequest, open_source
from mti_lightning.shells.search_run import load_from_config
from mti_lightning.shells.tables import log_to_wandb

STAGES = ("data_pass", "nmf", "render")
FIELDS = {
    "data_pass": ("data", "data_root", "curves_n", "curves_seed", "shard_size", "fast_net"),
    "nmf": ("k", "fraction", "k_max", "parts", "top_images"),
    "render": ("render", "render_steps", "render_lr", "render_draws", "render_power"),
}


@dataclasses.dataclass
class Plan:
    """The checked inputs: model, unit, layer, its shape and channel count, the data."""

    lm: LoadedModel
    spec: FeatureSpec
    readout: Readout
    layer: str
    shape: tuple[int, ...]
    channels: int
    source: ImageSource


def plan(cfg: MTIConfig, run_dir: Path, lm: LoadedModel | None = None, dataset: Any = None) -> Plan:
    """Load and check everything (no long work): each bad input is one MTIConfigError."""
    d = cfg.decompose
    if d is None:
        raise MTIConfigError(
            "no decompose group in the config; compose it with experiment=decompose"
        )
    check_parts(list(d.parts))
    pass_options(cfg)
    lm = lm if lm is not None else load_from_config(cfg)
    spec = one_feature(cfg.target, lm, "a decomposition is one unit's")
    readout = build_readout(lm.model, lm.input_size, [spec])
    layer = attribution_layer_auto(lm, readout) if d.layer == "auto" else d.layer
    try:
        attribute(lm, torch.zeros(1, *lm.input_size), readout, [layer])
    except MTIConfigError as err:
        raise MTIConfigError(f"decompose.layer={layer!r}: {err}") from err
    shape = layer_shapes(lm.model, lm.input_size, [layer])[layer]
    channels = spatial_view(lm.model, lm.input_size, layer, shape).channels
    try:
        check_k(d.k, channels)
    except MTIConfigError as err:
        raise MTIConfigError(f"decompose.{err} (layer {layer!r})") from err
    size = lm.input_size[1:]
    name = d.data if dataset is None else type(dataset).__name__
    request = SourceRequest(
        size,
        Path(d.data_root) if d.data_root else run_dir / "data" / re.sub(r"[^\w.-]+", "_", name),
        d.curves_n,
        d.curves_seed,
    )
    source = open_source(d.data if dataset is None else dataset, size, d.data_root or None, request)
    if len(source) == 0:
        raise MTIConfigError(
            f"decompose.data={name!r} holds no images; give a data set with images"
        )
    return Plan(lm, spec, readout, layer, tuple(shape), channels, source)


def pass_options(cfg: MTIConfig) -> PassOptions:
    """The data pass's options: per-channel sums only, placed as ``trainer`` says."""
    d = cfg.decompose
    options = PassOptions.on_trainer(
        cfg.trainer,
        shard_size=d.shard_size,
        batch_size=d.batch_size,
        num_workers=d.num_workers,
        vectors=False,
        channel_sums=True,
        fast_net=d.fast_net,
    )
    options.check()
    return options


class Stages:
    """The run directory's stages: fingerprints, records, skipping."""

    def __init__(self, cfg: MTIConfig, p: Plan, run_dir: Path):
        self.cfg, self.p, self.root = cfg, p, run_dir / "decompose"

    def fingerprint(self, stage: str) -> str:
        """Hash of the fields ``stage`` reads and of the stages before it."""
        d, i = self.cfg.decompose, STAGES.index(stage)
        parts: dict[str, Any] = {f: getattr(d, f) for f in FIELDS[stage]}
        if stage == "data_pass":
            parts.update(
                unit=str(self.p.spec),
                layer=self.p.layer,
                model=self.p.lm.name,
                source=self.p.source.identity(),
            )
        if stage == "render":
            parts.update(seed=self.cfg.seed, param=dataclasses.asdict(self.cfg.param))
            parts["transform"] = dataclasses.asdict(self.cfg.transform)
        parts["upstream"] = self.fingerprint(STAGES[i - 1]) if i else None
        text = json.dumps(parts, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def recorded(self, stage: str) -> dict[str, Any] | None:
        path = self.root / stage / "result.json"
        rec = json.loads(path.read_text()) if path.is_file() else None
        return rec if rec and rec.get("fingerprint") == self.fingerprint(stage) else None

    def record(self, stage: str, out: dict[str, Any], start: float) -> dict[str, Any]:
        rec = {"stage": stage, "fingerprint": self.fingerprint(stage), **out}
        rec["wall_s"] = time.perf_counter() - start
        write_json(self.root / stage / "result.json", rec)
        return {**rec, "skipped": False}


def _top(coefficients: np.ndarray, index: torch.Tensor, n: int) -> list[list[int]]:
    """Per component the data indices of its ``n`` highest coefficients."""
    order = np.argsort(-coefficients, axis=0, kind="stable")[:n]
    return [index[order[:, j]].tolist() for j in range(coefficients.shape[1])]


def _nmf(cfg: MTIConfig, p: Plan, data: dict[str, torch.Tensor], folder: Path) -> dict[str, Any]:
    d = cfg.decompose
    tensors, components = {}, []
    for part in d.parts:
        x = data[f"{p.layer}/channel_{part}"]
        fit = decompose_part(x, d.k, d.fraction, d.k_max, cfg.seed)
        tops = _top(fit.coefficients, data["index"], d.top_images)
        tensors[f"{part}/weights"] = torch.from_numpy(fit.weights).float()
        tensors[f"{part}/coefficients"] = torch.from_numpy(fit.coefficients).float()
        for j in range(fit.weights.shape[0]):
            components.append(
                {
                    "part": part,
                    "component": j,
                    "share": float(fit.share[j]),
                    "explained": fit.explained,
                    "top_channels": np.argsort(-fit.weights[j], kind="stable")[:5].tolist(),
                    "top_images": tops[j],
                    "weights": [round(float(v), 6) for v in fit.weights[j]],
                }
            )
    save_tensors(folder / "nmf.safetensors", tensors)
    return {"components": components}


def _render(
    cfg: MTIConfig, p: Plan, components: list[dict[str, Any]], folder: Path
) -> dict[str, Any]:
    directions = torch.tensor([c["weights"] for c in components], dtype=torch.float32)
    images, cos = render_components(cfg, p.lm, p.layer, p.shape, directions, folder / "engine")
    save_tensors(folder / "rendered.safetensors", {"images": images, "cosine": cos})
    paths = [
        save_png(folder / "png" / f"{c['part']}_{c['component']}.png", img).relative_to(
            folder.parent
        )
        for c, img in zip(components, images)
    ]
    return {"images": [str(x) for x in paths], "cosine": cos.tolist()}


def run_decompose(
    cfg: MTIConfig, run_dir: Path, lm: LoadedModel | None = None, dataset: Any = None
) -> DecomposeResult | None:
    """The decomposition that ``cfg`` describes, into ``run_dir`` (None on DDP ranks other
    than the first)."""
    run_dir = Path(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    p = plan(cfg, run_dir, lm, dataset)
    d = cfg.decompose
    st = Stages(cfg, p, run_dir)
    records: dict[str, dict[str, Any]] = {}
    shard_dir = st.root / "data_pass" / f"shards-{st.fingerprint('data_pass')[:12]}"
    start = time.perf_counter()
    rec = st.recorded("data_pass")
    if rec is None:
        shapes = {p.layer: p.shape}
        setup = PassSetup(p.lm, p.readout, p.source, [p.layer], shapes)
        summary = run_pass(setup, pass_options(cfg), shard_dir, "decompose")
        if summary.get("rank", 0) != 0:
            return None
        rec = st.record("data_pass", {k: summary[k] for k in ("n_images", "n_failed")}, start)
    else:
        rec = {**rec, "skipped": True}
    records["data_pass"] = rec
    data = load_pass(shard_dir)
    if "minus" in d.parts and float(data[f"{p.layer}/channel_minus"].sum()) <= 0:
        raise MTIConfigError(
            f"unit {p.spec} has no E- at {p.layer} on the data ({len(data['index'])} images): no "
            "inhibitory part to decompose; decompose E+ only with decompose.parts=[plus] "
            "(parts=['plus'] in Python)"
        )
    for stage in ("nmf", "render"):
        start = time.perf_counter()
        rec = st.recorded(stage)
        if rec is not None:
            records[stage] = {**rec, "skipped": True}
            continue
        folder = st.root / stage
        if stage == "nmf":
            out = _nmf(cfg, p, data, folder)
        elif d.render:
            out = _render(cfg, p, records["nmf"]["components"], folder)
        else:
            out = {"images": [], "cosine": []}
        records[stage] = st.record(stage, out, start)
    return _finish(cfg, p, run_dir, records)


def _finish(
    cfg: MTIConfig, p: Plan, run_dir: Path, records: dict[str, dict[str, Any]]
) -> DecomposeResult:
    """The components table, figure, record and W&B logging from the stages' results."""
    out = run_dir / "decompose"
    rendered = records["render"]
    rows = []
    for i, c in enumerate(records["nmf"]["components"]):
        row = {k: v for k, v in c.items() if k != "weights"}
        if rendered["images"]:
            row["image"] = rendered["images"][i]
            row["render_cosine"] = rendered["cosine"][i]
        rows.append(row)
    figure = components_figure(
        out / "components.png",
        f"{p.lm.name} {p.spec}: NMF of E+/E- at {p.layer}",
        records["nmf"]["components"],
        [out / r["image"] for r in rows] if rendered["images"] else [],
        p.source,
    )
    record = {
        "model": p.lm.name,
        "unit": str(p.spec),
        "layer": p.layer,
        "matrix": "images x channels (attribution summed over positions)",
        "n_images": records["data_pass"]["n_images"],
        "parts": list(cfg.decompose.parts),
        "stages": {k: {"skipped": v["skipped"], "wall_s": v["wall_s"]} for k, v in records.items()},
        "components": rows,
    }
    write_json(out / "components.json", record)
    log_to_wandb(
        cfg,
        run_dir,
        "decompose",
        [{k: v for k, v in r.items() if k not in ("image", "top_images")} for r in rows],
        [figure],
        images={"rendered": [out / r["image"] for r in rows]} if rendered["images"] else None,
        outputs=["decompose/components.json", "decompose/components.png", "config.yaml"],
    )
    print(summary_line(record, figure))
    return DecomposeResult(run_dir, rows, record, load_tensors(out / "nmf" / "nmf.safetensors"))


def summary_line(record: dict[str, Any], figure: Path) -> str:
    """One line: components per part and the largest share."""
    counts = {
        part: sum(1 for r in record["components"] if r["part"] == part) for part in record["parts"]
    }
    text = ", ".join(f"{n} for E{'+' if k == 'plus' else '-'}" for k, n in counts.items())
    return f"mti: decomposition of {record['unit']} at {record['layer']}: {text}; figure {figure}"
