"""The inhibition circuit of one unit, from the composed config of the ``mti`` command or the
Python API (``mti experiment=circuit``, ``mti.circuit``): the same function for both.

Every bad input fails first, in one line (an unknown unit or layer, an attribution layer that
does not lie upstream of the unit, ``k`` larger than the layer, a data set without images).
Then, into ``<run_dir>``:

1. the data pass (``shells/data_pass.py``, sharded and resumable under ``data_pass/``): for
   every image the per-channel sums of ``relu(A)`` and ``relu(-A)`` of the unit's attribution
   at the layer: one attribution pass for all channels; a unit never inhibited in the data
   (E- = 0 on every image) ends the run here, saying so, with nothing drawn;
2. the analysis (``core/circuit.py``): shares of E- and E+ over all images and the tensest
   ``tense_fraction``, mean signed and absolute attribution, cancellation, expanded weights
   and their rank correlation with the data attribution;
3. the causal checks (``checks.py``): the ablation on the tensest images and the echo;
4. with ``depth=2``, a second data pass holding the top channels as targets, one layer up;
5. the feature visualisations of the unit and its 2k channels, one batched search on the
   engine (kind ``visualize``), then ``circuit/circuit.png``, ``circuit/circuit.json`` and
   ``circuit/channels.csv`` (written atomically) and, with ``logger=wandb``, a W&B table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

import mti_lightning.world  # noqa: F401  (registers the built-in world's data sets)
from mti_lightning.core.attribution import attribute
from mti_lightning.core.circuit import (
    ChannelTable,
    channel_table,
    expanded_weight,
    kernel_box,
    spearman,
)
from mti_lightning.core.circuit import upstream_layer as upstream_layer_of
from mti_lightning.core.config_schema import CircuitSchema, MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout, build_readout
from mti_lightning.core.io import load_tensors, save_png, save_tensors, write_json
from mti_lightning.core.layer_choice import attribution_layer_auto, one_feature
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.probes import layer_shapes
from mti_lightning.core.token_grid import spatial_view
from mti_lightning.journeys.circuit import checks
from mti_lightning.journeys.circuit.figure import circuit_figure
from mti_lightning.journeys.circuit.result import CircuitResult
from mti_lightning.shells.callbacks import NonFiniteGuard
from mti_lightning.shells.data_pass import PassOptions, PassSetup, load_pass, run_pass
from mti_lightning.shells.engine import EngineOptions, optimise
from mti_lightning.shells.images import ImageSource, SourceRequest, open_source
from mti_lightning.shells.kinds import KINDS
from mti_lightning.shells.search_run import build_search, load_from_config
from mti_lightning.shells.tables import log_to_wandb, write_csv
from mti_lightning.world.curve_dataset import CurveDataset, RenderedCurveDataset

UPSTREAM_SHOWN = 3  # with depth=2: upstream channels listed per top channel and sign


@dataclasses.dataclass
class Plan:
    """The checked inputs: model, unit, layer, its channel count, the data."""

    lm: LoadedModel
    spec: FeatureSpec
    readout: Readout
    layer: str
    channels: int
    source: ImageSource
    upstream_layer: str | None


def _upstream(lm: LoadedModel, readout: Readout, layer: str, what: str) -> str:
    """``layer`` (``auto`` resolved) after checking it lies upstream of ``readout``'s
    features."""
    if layer == "auto":
        layer = attribution_layer_auto(lm, readout)
    try:
        attribute(lm, torch.zeros(len(readout.specs), *lm.input_size), readout, [layer])
    except MTIConfigError as err:
        raise MTIConfigError(f"{what}={layer!r}: {err}") from err
    return layer


def _channels(lm: LoadedModel, layer: str, shape: tuple[int, ...]) -> int:
    """The layer's channel count, through its spatial view (a Swin stage is (H, W, C))."""
    return spatial_view(lm.model, lm.input_size, layer, shape).channels


def plan(
    cfg: MTIConfig, run_dir: Path, lm: LoadedModel | None = None, dataset: Any = None
) -> Plan:
    """Load and check everything (no long work): each bad input is one MTIConfigError."""
    c = cfg.circuit
    if c is None:
        raise MTIConfigError("no circuit group in the config; compose it with experiment=circuit")
    _one_process(cfg)
    _pass_options(cfg)
    lm = lm if lm is not None else load_from_config(cfg)
    spec = one_feature(cfg.target, lm, "a circuit is one unit's")
    readout = build_readout(lm.model, lm.input_size, [spec])
    layer = _upstream(lm, readout, c.layer, "circuit.layer")
    channels = _channels(lm, layer, layer_shapes(lm.model, lm.input_size, [layer])[layer])
    if c.k > channels:
        raise MTIConfigError(
            f"circuit.k={c.k} but layer {layer!r} has {channels} channels; give k <= {channels}"
        )
    upstream_layer = None
    if c.depth == 2:
        try:
            upstream_layer = upstream_layer_of(lm, layer)
        except MTIConfigError as err:
            raise MTIConfigError(f"circuit.depth=2: {err}") from err
    size = lm.input_size[1:]
    name = c.data if dataset is None else type(dataset).__name__
    request = SourceRequest(
        size,
        Path(c.data_root) if c.data_root else run_dir / "data" / re.sub(r"[^\w.-]+", "_", name),
        c.curves_n,
        c.curves_seed,
    )
    data = c.data if dataset is None else dataset
    source = open_source(data, size, root=c.data_root or None, request=request)
    if len(source) == 0:
        raise MTIConfigError(f"circuit.data={name!r} holds no images; give a data set with images")
    return Plan(lm, spec, readout, layer, channels, source, upstream_layer)


def _one_process(cfg: MTIConfig) -> None:
    """The circuit runs in one process: its visualisation search and checks follow the pass
    on the first process only, which a multi-process strategy would leave waiting."""
    t = cfg.trainer
    many = (
        (isinstance(t.devices, int) and (t.devices > 1 or t.devices == -1))
        or (isinstance(t.devices, (list, tuple)) and len(t.devices) > 1)
        or t.num_nodes > 1
        or str(t.strategy).startswith("ddp")
    )
    if many:
        raise MTIConfigError(
            f"trainer.devices={t.devices}, trainer.num_nodes={t.num_nodes}, trainer.strategy="
            f"{t.strategy}: a circuit runs in one process; use trainer.devices=1 (one GPU or "
            "the CPU)"
        )


def _pass_options(cfg: MTIConfig) -> PassOptions:
    c, t = cfg.circuit, cfg.trainer
    options = PassOptions.on_trainer(
        t,
        shard_size=c.shard_size,
        batch_size=c.batch_size,
        num_workers=c.num_workers,
        vectors=False,
        channel_sums=True,
        fast_net=c.fast_net,
    )
    options.check()
    return options


def _key(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:12]


def channel_sums(
    cfg: MTIConfig, p: Plan, readout: Readout, layer: str, folder: Path
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The data pass of ``readout``'s features at ``layer`` with per-channel sums (resumed
    from ``folder`` where whole); its tensors and summary (None on other DDP ranks)."""
    options = _pass_options(cfg)
    specs = [str(s) for s in readout.specs]
    key = _key(specs, layer, p.source.identity(), options.shard_size, options.fast_net)
    shard_dir = folder / f"shards-{key}"
    shapes = layer_shapes(p.lm.model, p.lm.input_size, [layer])
    summary = run_pass(PassSetup(p.lm, readout, p.source, [layer], shapes), options, shard_dir, "circuit")
    if summary.get("rank", 0) != 0:
        return {}, summary
    return load_pass(shard_dir), summary


def _rows(
    table: ChannelTable, summed: torch.Tensor, inhibitory: list[int], excitatory: list[int]
) -> list[dict[str, Any]]:
    """One row per channel, largest share of E- first."""
    rows = []
    for c in table.share_minus.argsort(descending=True, stable=True).tolist():
        role = "inhibitory" if c in inhibitory else ""
        if c in excitatory:
            role = "both" if role else "excitatory"
        rows.append(
            {
                "channel": c,
                "role": role,
                "share_minus": float(table.share_minus[c]),
                "share_plus": float(table.share_plus[c]),
                "share_minus_tense": float(table.share_minus_tense[c]),
                "share_plus_tense": float(table.share_plus_tense[c]),
                "mean_signed": float(table.mean_signed[c]),
                "mean_abs": float(table.mean_abs[c]),
                "expanded_weight": float(summed[c]),
                "cancels": bool(table.cancels[c]),
            }
        )
    return rows


def _images(source: ImageSource, indices: list[int]) -> torch.Tensor:
    images = [source.load(i) for i in indices]
    bad = [source.name(i) for i, img in zip(indices, images) if img is None]
    if bad:
        raise MTIConfigError(f"images changed since the data pass, now unreadable: {bad[:3]}")
    return torch.stack(images)


def visualisations(
    cfg: MTIConfig, lm: LoadedModel, specs: list[FeatureSpec], work_dir: Path
) -> torch.Tensor:
    """Feature visualisations of ``specs``, all in one batched search on the engine (kind
    ``visualize``, the config's parameterisation, transforms and trainer; ``circuit.viz_*``
    steps, lr and draws); kept in ``work_dir/viz.safetensors`` and reused for the same
    features and settings."""
    c = cfg.circuit
    key = _key([str(s) for s in specs], c.viz_steps, c.viz_lr, c.viz_draws, cfg.seed)
    cached = work_dir / f"viz-{key}.safetensors"
    if cached.is_file():
        return load_tensors(cached)["images"]
    s = dataclasses.replace(
        cfg.search,
        kind="visualize",
        steps=c.viz_steps,
        lr=c.viz_lr,
        draws=c.viz_draws,
        attribution_layer="",
    )
    readout = build_readout(lm.model, lm.input_size, specs)
    size = tuple(cfg.param.canvas or lm.input_size[1:])
    search = build_search(cfg, KINDS["visualize"], s, lm, readout, None, size)
    guard = NonFiniteGuard(cfg.callbacks.check_every)
    options = EngineOptions.from_config(cfg)
    optimise(search, s.steps, s.draws, cfg.seed, work_dir / "stage", options, False, [guard])
    images = search().detach().float().cpu()
    save_tensors(cached, {"images": images})
    return images


def _upstream_table(
    cfg: MTIConfig, p: Plan, top: list[int], run_dir: Path
) -> dict[int, dict[str, Any]]:
    """``depth=2``: for each top channel (as a unit at the layer's centre), the upstream
    channels with the largest shares of its E- and E+ at the layer above."""
    c = cfg.circuit
    specs = [FeatureSpec(p.layer, ch, "center") for ch in top]
    device = next(p.lm.model.parameters()).device
    readout = build_readout(p.lm.model, p.lm.input_size, specs).to(device)
    layer = p.upstream_layer
    data, _ = channel_sums(cfg, p, readout, layer, run_dir / "data_pass_depth2")
    plus, minus = data[f"{layer}/channel_plus"], data[f"{layer}/channel_minus"]
    if len(top) == 1:
        plus, minus = plus.unsqueeze(1), minus.unsqueeze(1)
    out = {}
    for t, ch in enumerate(top):
        tab = channel_table(plus[:, t], minus[:, t], c.tense_fraction, c.cancel_ratio)
        n = min(UPSTREAM_SHOWN, tab.share_minus.numel())
        out[ch] = {
            "layer": layer,
            "inhibitory": [(i, float(tab.share_minus[i])) for i in tab.ranked("share_minus", n)],
            "excitatory": [(i, float(tab.share_plus[i])) for i in tab.ranked("share_plus", n)],
        }
    return out


def _echo_images(cfg: MTIConfig) -> tuple[torch.Tensor, torch.Tensor]:
    c = cfg.circuit
    rendered = RenderedCurveDataset(CurveDataset(c.echo_images, c.echo_seed), num_workers=0)
    return rendered.images.float() / 255, rendered.labels


def run_circuit(
    cfg: MTIConfig,
    run_dir: Path,
    lm: LoadedModel | None = None,
    dataset: Any = None,
) -> CircuitResult | None:
    """The circuit that ``cfg`` describes, into ``run_dir`` (None on DDP ranks other than
    the first)."""
    start = time.perf_counter()
    run_dir = Path(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    p = plan(cfg, run_dir, lm, dataset)
    c: CircuitSchema = cfg.circuit
    times: dict[str, float] = {}
    data, summary = channel_sums(cfg, p, p.readout, p.layer, run_dir / "data_pass")
    if summary.get("rank", 0) != 0:
        return None
    times["data_pass_s"] = time.perf_counter() - start
    device = next(p.lm.model.parameters()).device
    readout = p.readout.to(device)
    plus, minus = data[f"{p.layer}/channel_plus"], data[f"{p.layer}/channel_minus"]
    n = len(plus)
    if float(minus.sum()) <= 0:
        raise MTIConfigError(
            f"unit {p.spec} is never inhibited in the data ({n} images, E- = 0 at {p.layer} on "
            "every one); there is no inhibition circuit to draw"
        )
    t0 = time.perf_counter()
    table = channel_table(plus, minus, c.tense_fraction, c.cancel_ratio)
    inhibitory = [i for i in table.ranked("share_minus", c.k) if table.share_minus[i] > 0]
    excitatory = [i for i in table.ranked("share_plus", c.k) if table.share_plus[i] > 0]
    weight = expanded_weight(p.lm, readout, p.layer)
    view = spatial_view(p.lm.model, p.lm.input_size, p.layer, tuple(weight.shape))
    if view.grid is not None:  # token grids and channels-last stages read as (C, H, W)
        weight = view.to_grid(weight[None])[0]
    if weight.dim() == 3:
        h0, h1, w0, w1 = kernel_box(weight)
        kernels = weight[:, h0:h1, w0:w1].cpu()
        summed = weight.sum((1, 2)).cpu()
    else:
        summed = weight.reshape(-1, p.channels).sum(0).cpu() if weight.dim() == 2 else weight.cpu()
        kernels = summed.view(-1, 1, 1)
    rho = spearman(summed, table.mean_signed)
    times["analysis_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tense_indices = data["index"][table.tense].tolist()
    seeds = list(range(cfg.seed + 1, cfg.seed + 1 + c.control_seeds))
    ablation = checks.ablation(
        p.lm, readout, p.layer, _images(p.source, tense_indices), inhibitory, p.channels,
        len(inhibitory), seeds, c.batch_size,
    )
    times["ablation_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    echo: dict[str, Any] = {}
    if c.echo:
        images, labels = _echo_images(cfg)
        echo = checks.echo(p.lm, p.spec, readout, p.layer, inhibitory, images, labels, c.batch_size)
    times["echo_s"] = time.perf_counter() - t0

    upstream = None
    if c.depth == 2:
        t0 = time.perf_counter()
        top = list(dict.fromkeys([*inhibitory, *excitatory]))
        upstream = _upstream_table(cfg, p, top, run_dir)
        times["depth2_s"] = time.perf_counter() - t0

    out = run_dir / "circuit"
    viz: dict[Any, torch.Tensor] = {}
    paths: dict[Any, Path] = {}
    if c.visualize:
        t0 = time.perf_counter()
        top = list(dict.fromkeys([*inhibitory, *excitatory]))
        specs = [p.spec, *(FeatureSpec(p.layer, ch, "center") for ch in top)]
        images = visualisations(cfg, p.lm, specs, run_dir / "stages" / "visualisation")
        for key, image in zip(["unit", *top], images):
            viz[key] = image
            paths[key] = save_png(out / "viz" / f"{key if key == 'unit' else f'channel_{key}'}.png", image)
        times["visualisation_s"] = time.perf_counter() - t0
    times["total_s"] = time.perf_counter() - start

    rows = _rows(table, summed, inhibitory, excitatory)
    by_channel = {r["channel"]: r for r in rows}
    circuit_figure(
        out / "circuit.png",
        f"{p.lm.name} {p.spec}  (attribution at {p.layer}; Spearman(w, A) {rho:+.2f})",
        by_channel, inhibitory, excitatory, kernels, viz, ablation, echo, upstream,
    )
    record = {
        "model": p.lm.name,
        "unit": str(p.spec),
        "layer": p.layer,
        "data": p.source.identity(),
        "n_images": n,
        "n_failed": summary.get("n_failed", 0),
        "k": c.k,
        "tense_fraction": c.tense_fraction,
        "n_tense": len(tense_indices),
        "cancel_ratio": c.cancel_ratio,
        "inhibitory": inhibitory,
        "excitatory": excitatory,
        "inhibitory_share": float(table.share_minus[inhibitory].sum()) if inhibitory else 0.0,
        "excitatory_share": float(table.share_plus[excitatory].sum()) if excitatory else 0.0,
        "spearman_weight_attribution": rho,
        "cancelling": [r["channel"] for r in rows if r["cancels"]],
        "ablation": ablation,
        "echo": echo,
        "upstream": {str(k): v for k, v in (upstream or {}).items()},
        "expanded_weight": "linearised path: activation modules -> identity, max pools -> "
        "average pools, gradient at the all-zero normalised input (core/circuit.py)",
        "times": times,
        "channels": rows,
    }
    write_json(out / "circuit.json", record)
    write_csv(out / "channels.csv", rows)
    top_rows = [by_channel[ch] for ch in dict.fromkeys([*inhibitory, *excitatory])]
    log_to_wandb(
        cfg,
        run_dir,
        "circuit",
        top_rows,
        [out / "circuit.png"],
        images={"visualization": [paths.get(r["channel"]) for r in top_rows]} if paths else None,
        outputs=["circuit", "config.yaml"],
    )
    print(summary_line(record, out / "circuit.png"))
    return CircuitResult(run_dir, rows, record)


def summary_line(record: dict[str, Any], figure: Path) -> str:
    """One line: the top inhibitors, their share, the ablation against its control."""
    a = record["ablation"]
    return (
        f"mti: circuit of {record['unit']} at {record['layer']} over {record['n_images']} "
        f"images: inhibitory channels {record['inhibitory']} carry "
        f"{100 * record['inhibitory_share']:.0f}% of E-; ablating them raises the activation "
        f"on the tensest images by {a['rise_inhibitory']:+.3g} (k random channels: "
        f"{a['rise_control_mean']:+.3g}); figure {figure}"
    )
