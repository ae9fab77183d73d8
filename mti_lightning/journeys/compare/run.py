"""Architecture comparison: how the units of one layer per model are excited and inhibited.

For each model (timm names and built-ins such as ``curvenet``) the pipeline picks a layer (by
name or relative depth) and units (all channels or a seeded sample), measures on one common
image set the excitation ``E+``, inhibition ``E-``, tension and tension ratio of every
(unit, image), runs one batched MTI search holding a sample of the units, and writes one
comparison table and its figures. Stages, each resumable in the run directory:

1. plan: every model, layer, attribution layer and unit is checked (clear errors before any
   long work); pretrained weights that cannot be fetched fall back to random init, noted;
   then timm models without weights are trained on the curves world, or reused from the
   trained cache (``compare.train``, ``compare.cache_dir``; compare/trained.py);
2. images: synthetic curve images written to ``images/`` (or a user folder), resized to each
   model's input;
3. data pass: ``data/<model>.safetensors`` (``(units, images)`` tensors) and its ``.json``;
4. MTI search: ``searches/<model>/`` (a full search run directory);
5. report: ``compare.csv``, ``compare.txt``, ``compare_report.md`` and ``.png`` (the findings
   per architecture: orientation tuning of every unit of the layer on single-arc curve
   images, where the strongest inhibition lies, never-tense units, search over data),
   ``tension_by_model.png``, ``data_vs_search.png`` and, with ``logger=wandb``, a W&B table;
   ``compare.report_to=DIR`` copies the report there (``docs/``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

import mti_lightning.world  # noqa: F401  (registers the built-in world's data sets)
from mti_lightning.core.attribution import attribute, tension_ratio
from mti_lightning.core.config_schema import ModelSchema, MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout
from mti_lightning.core.io import load_tensors, save_tensors, write_json
from mti_lightning.core.layer_choice import (
    attribution_layer_for,
    check_depth,
    layer_at_depth,
    position_for,
    survey,
)
from mti_lightning.core.models import check_model_name, load_seeded
from mti_lightning.core.probes import layer_shapes
from mti_lightning.core.token_grid import layer_views, spatial_view
from mti_lightning.core.zoo import BUILTIN_MODELS
from mti_lightning.journeys.compare.plan import Plan, compare_group
from mti_lightning.journeys.compare.report import write_report
from mti_lightning.journeys.compare.trained import recipes_to_train, train_models
from mti_lightning.journeys.compare.tuning import (
    Tuning,
    tuning_images,
    unit_inhibition,
    unit_tuning,
)
from mti_lightning.shells.data_pass import PassOptions, PassSetup, load_pass, run_pass
from mti_lightning.shells.images import ImageSource, SourceRequest, open_source, source_name
from mti_lightning.world.curves import NUM_CLASSES
from mti_lightning.world.inhibition_tuning import InhibitionMeasures, background_images

# runs one search from its config into a directory and returns its metrics record
SearchRunner = Callable[[MTIConfig, Path], dict[str, Any]]

MEASURES = ("activation", "e_plus", "e_minus", "tension", "tension_ratio")
# the columns of inhibition measured as inhibition (world/inhibition_tuning.py) in each row
INHIBITION_COLUMNS = (
    "tuning_min_offset_blind",
    "tuning_min_far_blind",
    "e_minus_offset",
    "e_minus_offset_blind",
    "e_minus_far_blind",
    "e_minus_selectivity",
    "e_minus_p",
    "carriers_offset",
    "carriers_offset_blind",
    "excitors_offset",
    "background",
    "suppression",
    "suppression_blind",
    "suppression_p",
)


def check_models(models: Any) -> list[str]:
    """The ``models`` list, every name a built-in, timm or ``torchvision:NAME`` model, or a
    clear error."""
    names = [models] if isinstance(models, str) else list(models or [])
    if not names:
        raise MTIConfigError("models is empty; give e.g. models=[curvenet,resnet18]")
    for name in names:
        check_model_name(str(name), " in models")
    if len(set(names)) != len(names):
        raise MTIConfigError(f"models {names} names a model twice")
    return names


def layer_spec(layers: Any, name: str, models: Sequence[str]) -> str | float:
    """The layer of model ``name``: a layer name or a relative depth.

    ``layers`` is one depth (or name) for every model, or ``{model: name or depth}`` with an
    optional ``default`` entry.
    """
    spec = layers
    if isinstance(layers, Mapping):
        stray = [k for k in layers if k != "default" and k not in models]
        if stray:
            raise MTIConfigError(
                f"layers has entries for {stray}, which are not in models {list(models)}"
            )
        spec = layers.get(name, layers.get("default"))
        if spec is None:
            raise MTIConfigError(
                f"layers has no entry for model {name!r} and no default; give "
                f"layers.{name}=LAYER or a depth, or layers.default=0.5"
            )
    if isinstance(spec, bool) or not isinstance(spec, (int, float, str)):
        raise MTIConfigError(
            f"layers entry {spec!r} for model {name!r}; valid: a layer name or a depth in (0, 1]"
        )
    return check_depth(spec) if isinstance(spec, (int, float)) else spec


def choose_units(spec: Any, n_channels: int, seed: int, where: str) -> list[int]:
    """Channels to measure: ``all``, a seeded sample of ``spec`` of them, or a given list."""
    if spec == "all":
        return list(range(n_channels))
    if isinstance(spec, int) and not isinstance(spec, bool):
        if spec < 1:
            raise MTIConfigError(f"compare.units={spec}; need at least 1 (or all)")
        gen = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(n_channels, generator=gen)[:spec].tolist())
    if isinstance(spec, Sequence) and not isinstance(spec, str) and spec:
        bad = [u for u in spec if not isinstance(u, int) or not 0 <= u < n_channels]
        if bad:
            raise MTIConfigError(f"units {bad} out of range for {where}: valid 0..{n_channels - 1}")
        return sorted(set(spec))
    raise MTIConfigError(f"compare.units={spec!r}; valid: a count, all, or a list of channels")


def _load(name: str, m: ModelSchema, checkpoint: str | None, seed: int):
    """The model, its loading note and the model config that reloads the same weights.

    Loaded with torch seeded by ``seed`` (:func:`~mti_lightning.core.models.load_seeded`), as
    the search runner loads it, so a random-init model loaded again by the search has the
    same weights as the one measured here.
    """
    size = None if name in BUILTIN_MODELS else m.input_size
    pretrained = m.pretrained and checkpoint is None and name not in BUILTIN_MODELS
    note = ""
    try:
        lm = load_seeded(name, seed, pretrained, checkpoint, input_size=size)
    except MTIConfigError as err:
        if not pretrained:
            raise
        why = type(err.__cause__).__name__ if err.__cause__ else "no network"
        note = f"pretrained weights unreachable ({why}), random init"
        pretrained = False
        lm = load_seeded(name, seed, False, None, input_size=size)
    note = note or ("trained" if lm.trained else "random init")
    return lm, note, ModelSchema(name, pretrained, checkpoint, size)


def plan_model(
    name: str,
    cfg: MTIConfig,
    models: Sequence[str],
    checkpoint: str | None = None,
    note: str = "",
) -> Plan:
    """Load model ``name`` and check its layer, attribution layer, position and units.

    ``checkpoint`` (weights trained for the comparison) overrides ``compare.checkpoints``;
    ``note`` replaces the loading note.
    """
    c = compare_group(cfg)
    spec = layer_spec(cfg.layers, name, models)
    checkpoint = checkpoint or (c.checkpoints or {}).get(name)
    lm, loaded_note, model_cfg = _load(name, cfg.model, checkpoint, cfg.seed)
    note = note or loaded_note
    s = survey(lm.model, lm.input_size)
    if isinstance(spec, float):
        layer = layer_at_depth(s, spec, name)
    else:
        try:
            layer_shapes(lm.model, lm.input_size, [spec])
        except MTIConfigError as err:
            raise MTIConfigError(f"layers for model {name}: {err}") from err
        layer = spec
    attr = (c.attribution_layers or {}).get(name) or attribution_layer_for(s, [layer], name)
    position = position_for(s, layer)
    shape = s.shapes[layer]
    view = spatial_view(lm.model, lm.input_size, layer, shape)  # Swin's stages: channels last
    n_channels = view.channels
    units = choose_units(c.units, n_channels, c.unit_seed, f"model {name} layer {layer}")
    probe = Readout([FeatureSpec(layer, units[0], position)], {layer: shape}, {layer: view})
    attribute(lm, torch.zeros(1, *lm.input_size), probe, [attr])
    return Plan(name, lm, layer, attr, position, units, n_channels, note, model_cfg)


def image_source(
    cfg: MTIConfig, run_dir: Path, size: tuple[int, int]
) -> tuple[ImageSource, Path, str]:
    """The common image set at ``size``: its source, its folder and a line describing it
    (``compare.images``, else ``compare.n_images`` curve images written to ``images/``)."""
    c = compare_group(cfg)
    if c.images and source_name(c.images) is None:
        folder = Path(c.images)
        try:
            source = open_source(str(folder), size, limit=c.n_images)
        except MTIConfigError as err:
            raise MTIConfigError(f"compare.images: {err}") from err
        return source, folder, f"{len(source)} images from {folder}"
    name, folder = c.images or "curves", run_dir / "images"
    request = SourceRequest(size, folder, c.n_images, cfg.seed, {"two_arc_fraction": 0.3})
    source = open_source(name, size, request=request)
    if name == "curves":
        return source, folder, f"{len(source)} synthetic curve images ({folder})"
    return source, folder, f"{len(source)} images of the built-in data set {name} ({folder})"


def data_pass(
    plan: Plan, source: ImageSource, batch_size: int, shard_dir: Path, accelerator: str
) -> dict[str, torch.Tensor]:
    """Activation and energies of every (unit, image) by the engine's one data pass: tensors
    ``(units, images)`` over the images that decoded (``index``: their indices in ``source``).

    ``batch_size`` (unit, image) pairs go through the network at a time; everything stays on
    the device until the reduced per-pair values are complete.
    """
    lm, layer, attr = plan.lm, plan.layer, plan.attribution_layer
    views = layer_views(lm.model, lm.input_size, [layer, attr])
    shapes = {k: v.shape for k, v in views.items()}
    readout = Readout([FeatureSpec(layer, u, plan.position) for u in plan.units], shapes, views)
    setup = PassSetup(lm, readout, source, [attr], shapes)
    options = PassOptions(
        shard_size=256, batch_size=batch_size, vectors=False, fast_net=False, accelerator=accelerator
    )
    run_pass(setup, options, shard_dir, who="compare")
    out = load_pass(shard_dir)
    n_units = len(plan.units)

    def per_unit(v: torch.Tensor) -> torch.Tensor:  # (images, units) -> (units, images)
        return v.reshape(len(v), n_units).T.contiguous().float()

    e_plus, e_minus = per_unit(out[f"{attr}/e_plus"]), per_unit(out[f"{attr}/e_minus"])
    return {
        "activation": per_unit(out["activation"]),
        "e_plus": e_plus,
        "e_minus": e_minus,
        "tension": torch.minimum(e_plus, e_minus),
        "tension_ratio": tension_ratio(e_plus, e_minus),
        "index": out["index"],
    }


def _measured(
    plan: Plan, source: ImageSource, run_dir: Path, batch: int, accelerator: str
) -> dict[str, torch.Tensor]:
    """The data pass of ``plan``, reused from the run directory when it matches."""
    meta = {
        "model": plan.lm.source,
        "layer": plan.layer,
        "attribution_layer": plan.attribution_layer,
        "position": plan.position,
        "units": plan.units,
        "images": [source.name(i) for i in range(len(source))],
    }
    tensors = run_dir / "data" / f"{plan.name}.safetensors"
    meta_path = tensors.with_suffix(".json")
    if tensors.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return load_tensors(tensors)
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]
    shard_dir = run_dir / "data" / plan.name / f"shards-{digest}"
    values = data_pass(plan, source, batch, shard_dir, accelerator)
    save_tensors(tensors, values)
    write_json(meta_path, meta)
    return values


def _search(
    plan: Plan, cfg: MTIConfig, run_dir: Path, run_search: SearchRunner
) -> dict[int, dict[str, Any]]:
    """One batched MTI search of the first ``compare.search_units`` units: row per unit."""
    units = plan.units[: compare_group(cfg).search_units]
    if not units:
        return {}
    lg = cfg.logger
    sub = replace(
        cfg,
        checkpoint=replace(cfg.checkpoint, resume=False),
        model=plan.model_cfg,
        target={"layer": plan.layer, "channel": units, "position": plan.position},
        search=replace(cfg.search, kind="mti", attribution_layer=plan.attribution_layer),
        logger=replace(
            lg, name=f"{lg.name or run_dir.name}-{plan.name}", group=lg.group or run_dir.name
        ),
    )
    out = run_dir / "searches" / plan.name
    done = out / "metrics.json"
    # what the search was run with (its logger aside), to know whether a finished one fits
    keys = ("seed", "search", "param", "transform", "trainer", "callbacks", "checkpoint")
    ran_with = asdict(sub)
    meta = {**{k: ran_with[k] for k in (*keys, "model", "target")}, "logger": None}
    meta_path = run_dir / "searches" / f"{plan.name}.json"
    if done.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        record = json.loads(done.read_text())
    else:
        record = run_search(sub, out)
        write_json(meta_path, meta)
    best: dict[int, dict[str, Any]] = {}
    for u in units:
        feature = str(FeatureSpec(plan.layer, u, plan.position))
        rows = [r for r in record["images"] if r["feature"] == feature]
        best[u] = max(rows, key=lambda r: r["end_tension"])
    return best


def unit_rows(
    plan: Plan,
    values: dict[str, torch.Tensor],
    names: list[str],
    found: dict[int, dict],
    tuning: Tuning,
    inhibition: dict[int, InhibitionMeasures] | None = None,
) -> list[dict[str, Any]]:
    """One comparison row per unit: orientation tuning, inhibition measured as inhibition
    (tuned units; None elsewhere), activation statistics, data tension, search tension."""
    rows = []
    for k, unit in enumerate(plan.units):
        measured = (inhibition or {}).get(unit)
        extra = measured.as_dict() if measured is not None else {}
        act, t, ratio = values["activation"][k], values["tension"][k], values["tension_ratio"][k]
        top = int(t.argmax())
        s = found.get(unit)
        t_max = float(t[top])
        rows.append(
            {
                "model": plan.name,
                "weights": plan.note,
                "layer": plan.layer,
                "attribution_layer": plan.attribution_layer,
                "unit": unit,
                "r2": float(tuning.r2[unit]),
                "tuned": bool(tuning.tuned[unit]),
                "preferred_deg": float(tuning.preferred_deg[unit]),
                "inhibition_deg": float(tuning.inhibition_deg[unit]),
                "inhibition_offset_deg": float(tuning.offset_deg[unit]),
                **{key: extra.get(key) for key in INHIBITION_COLUMNS},
                "n_images": len(names),
                "act_mean": float(act.mean()),
                "act_std": float(act.std()) if len(act) > 1 else 0.0,
                "act_min": float(act.min()),
                "act_max": float(act.max()),
                "e_plus_mean": float(values["e_plus"][k].mean()),
                "e_minus_mean": float(values["e_minus"][k].mean()),
                "tension_mean": float(t.mean()),
                "tension_max": t_max,
                "tension_max_image": names[top],
                "ratio_mean": float(ratio.mean()),
                "ratio_at_max": float(ratio[top]),
                "search_start_tension": s["start_tension"] if s else None,
                "search_tension": s["end_tension"] if s else None,
                "search_ratio": s["end_tension_ratio"] if s else None,
                "search_activation": s["end_activation"] if s else None,
                "search_over_data": s["end_tension"] / t_max if s and t_max > 0 else None,
                "search_image": f"searches/{plan.name}/images/image_{s['image']:03d}.png"
                if s
                else None,
            }
        )
    return rows


def _device(accelerator: str) -> torch.device:
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_compare(
    cfg: MTIConfig, run_dir: Path, run_search: SearchRunner
) -> list[dict[str, Any]]:
    """Run the comparison described by ``cfg`` into ``run_dir``; return its table rows.
    ``run_search(config, run_dir) -> metrics record`` runs each model's MTI search (the face
    passes the search journey's runner, so the comparison never imports another journey)."""
    run_dir = Path(run_dir)
    c = compare_group(cfg)
    models = check_models(cfg.models)
    for name in models:
        layer_spec(cfg.layers, name, models)
    for key, value in (("batch_size", c.batch_size), ("n_images", c.n_images)):
        if value < 1:
            raise MTIConfigError(f"compare.{key}={value}; need at least 1")
    if c.search_units < 0:
        raise MTIConfigError(f"compare.search_units={c.search_units}; need 0 or more")
    if c.tuning_images < NUM_CLASSES:
        raise MTIConfigError(
            f"compare.tuning_images={c.tuning_images}; need at least {NUM_CLASSES} "
            "(one per orientation), e.g. 1200"
        )
    if c.images:
        image_source(cfg, run_dir, (1, 1))  # a bad folder is an error before any training
    recipes = recipes_to_train(cfg, models)
    plans = [plan_model(name, cfg, models) for name in models]
    records = train_models(cfg, recipes, run_dir)
    for i, name in enumerate(models):
        if name in records:
            weights, note, _ = records[name]
            plans[i] = plan_model(name, cfg, models, checkpoint=str(weights), note=note)
    t_images, t_labels = tuning_images(c.tuning_images, c.tuning_seed)
    n_inhibition = min(c.inhibition_images, c.tuning_images)
    backgrounds = background_images(min(n_inhibition, 200), c.tuning_seed)
    accelerator = cfg.trainer.accelerator
    rows, data, tunings, skipped = [], {}, {}, 0
    for plan in plans:
        source, folder, images_line = image_source(cfg, run_dir, plan.lm.input_size[1:])
        values = _measured(plan, source, run_dir, c.batch_size, accelerator)
        names = [source.name(int(i)) for i in values.pop("index")]
        plan.lm.to(_device(accelerator))
        tunings[plan.name] = unit_tuning(plan, t_images, t_labels)
        inhibition = unit_inhibition(
            plan,
            tunings[plan.name],
            t_images[:n_inhibition],
            t_labels[:n_inhibition],
            backgrounds,
            c.batch_size,
        )
        plan.lm.to("cpu")
        data[plan.name] = values
        found = _search(plan, cfg, run_dir, run_search)
        rows += unit_rows(plan, values, names, found, tunings[plan.name], inhibition)
        skipped = len(source) - len(names)
    header = _header(cfg, plans, rows, images_line, skipped)
    training = {name: record for name, (_, _, record) in records.items()}
    write_report(cfg, run_dir, header, plans, rows, data, tunings, training, image_root=folder)
    return rows


def _header(
    cfg: MTIConfig, plans: list[Plan], rows: list[dict], images_line: str, skipped: int
) -> str:
    """The report's header: image set, units, searches, which models are untrained, and how
    many units are never tense (zero E+ or E- on every image: e.g. a random-init timm ResNet,
    whose last BN of each block starts at zero, so a block computes the identity)."""
    c, s = compare_group(cfg), cfg.search
    lines = [
        "MTI architecture comparison",
        f"images: {images_line}"
        + (f"; {skipped} files did not decode (skipped)" if skipped else ""),
        f"units: {c.units} per model (seed {c.unit_seed}); MTI search of "
        f"{c.search_units} per model, {s.steps} steps",
    ]
    for p in plans:
        never = sum(1 for r in rows if r["model"] == p.name and r["tension_max"] == 0)
        lines.append(
            f"  {p.name}: {p.lm.source}; {p.note}; layer {p.layer} @{p.position} "
            f"({len(p.units)} of {p.n_channels} units), attribution at {p.attribution_layer}"
            + (f"; {never} units never tense on any image" if never else "")
        )
    untrained = [p.name for p in plans if not p.lm.trained]
    if untrained:
        lines.append(
            f"UNTRAINED (random init): {', '.join(untrained)}; their numbers describe the "
            "architecture at initialisation, not learned features"
        )
    return "\n".join(lines)
