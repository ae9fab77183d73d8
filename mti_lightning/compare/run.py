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

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from mti_lightning.compare.plan import Plan
from mti_lightning.compare.report import write_report
from mti_lightning.compare.trained import recipes_to_train, train_models
from mti_lightning.compare.tuning import Tuning, tuning_images, unit_tuning
from mti_lightning.core.attribution import attribute
from mti_lightning.core.errors import MTIConfigError, closest
from mti_lightning.core.features import FeatureSpec, Readout
from mti_lightning.core.io import load_image, load_tensors, save_tensors, write_json
from mti_lightning.core.models import load_model
from mti_lightning.core.probes import layer_shapes
from mti_lightning.core.zoo import BUILTIN_MODELS
from mti_lightning.search.layer_choice import (
    attribution_layer_for,
    check_depth,
    layer_at_depth,
    position_for,
    survey,
)
from mti_lightning.world.curves import NUM_CLASSES
from mti_lightning.world.photos import is_photos, write_photo_folder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
MEASURES = ("activation", "e_plus", "e_minus", "tension", "tension_ratio")


def check_models(models: Any) -> list[str]:
    """The ``models`` list, every name a built-in or timm model, or a clear error."""
    import timm

    names = [models] if isinstance(models, str) else list(models or [])
    if not names:
        raise MTIConfigError("models is empty; give e.g. models=[curvenet,resnet18]")
    for name in names:
        if name not in BUILTIN_MODELS and not timm.is_model(name):
            hints = closest(str(name), [*BUILTIN_MODELS, *timm.list_models()])
            raise MTIConfigError(
                f"unknown model {name!r} in models; valid: a built-in "
                f"({', '.join(BUILTIN_MODELS)}) or a timm model name; closest: {hints}"
            )
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


def _load(name: str, m: dict[str, Any], checkpoint: str | None, seed: int):
    """The model, its loading note and the model config that reloads the same weights.

    The global seed is set first, as ``run_search_job`` does, so a random-init model loaded
    again by the search has the same weights as the one measured here.
    """
    size = None if name in BUILTIN_MODELS else m.get("input_size")
    pretrained = bool(m.get("pretrained")) and checkpoint is None and name not in BUILTIN_MODELS
    torch.manual_seed(seed)
    note = ""
    try:
        lm = load_model(name, pretrained, checkpoint, input_size=size)
    except MTIConfigError as err:
        if not pretrained:
            raise
        why = type(err.__cause__).__name__ if err.__cause__ else "no network"
        note = f"pretrained weights unreachable ({why}), random init"
        pretrained = False
        torch.manual_seed(seed)
        lm = load_model(name, False, None, input_size=size)
    note = note or ("trained" if lm.trained else "random init")
    cfg = {"name": name, "pretrained": pretrained, "checkpoint": checkpoint, "input_size": size}
    return lm, note, cfg


def plan_model(
    name: str,
    cfg: dict[str, Any],
    models: Sequence[str],
    checkpoint: str | None = None,
    note: str = "",
) -> Plan:
    """Load model ``name`` and check its layer, attribution layer, position and units.

    ``checkpoint`` (weights trained for the comparison) overrides ``compare.checkpoints``;
    ``note`` replaces the loading note.
    """
    c = cfg["compare"]
    spec = layer_spec(cfg["layers"], name, models)
    checkpoint = checkpoint or (c.get("checkpoints") or {}).get(name)
    lm, loaded_note, model_cfg = _load(name, cfg["model"], checkpoint, cfg["seed"])
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
    attr = (c.get("attribution_layers") or {}).get(name) or attribution_layer_for(s, [layer], name)
    position = position_for(s, layer)
    shape = s.shapes[layer]
    n_channels = shape[0] if len(shape) == 3 else shape[-1]
    units = choose_units(c["units"], n_channels, c["unit_seed"], f"model {name} layer {layer}")
    probe = Readout([FeatureSpec(layer, units[0], position)], {layer: shape})
    attribute(lm, torch.zeros(1, *lm.input_size), probe, [attr])
    return Plan(name, lm, layer, attr, position, units, n_channels, note, model_cfg)


def image_files(cfg: dict[str, Any], run_dir: Path) -> tuple[list[Path], Path, str]:
    """The common image set, its folder and a line describing it."""
    c = cfg["compare"]
    if is_photos(c.get("images")):  # scikit-image's photographs, seeded crops
        spec, out = c["images"], run_dir / "images"
        folder = write_photo_folder(spec, out, 224, n=c["n_images"], seed=cfg["seed"])
        files = sorted(folder.rglob("*.png"))
        return files, folder, f"{len(files)} crops of scikit-image's photographs ({spec})"
    if c.get("images"):
        folder = Path(c["images"])
        if not folder.is_dir():
            raise MTIConfigError(f"compare.images={folder} is not a directory of images")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files = files[: c["n_images"]]
        if not files:
            raise MTIConfigError(
                f"no image files ({', '.join(IMAGE_SUFFIXES)}) under compare.images={folder}"
            )
        return files, folder, f"{len(files)} images from {folder}"
    from mti_lightning.world.curve_dataset import write_image_folder
    from mti_lightning.world.curves import CurveConfig

    folder = write_image_folder(run_dir / "images", c["n_images"], cfg["seed"], CurveConfig(), 0.3)
    files = sorted(folder.rglob("*.png"))
    return files, folder, f"{len(files)} synthetic curve images ({folder})"


def load_images(files: Sequence[Path], size: tuple[int, int]) -> tuple[torch.Tensor, list[Path]]:
    """Images resized to ``size`` and the files that decoded; the others are skipped."""
    images, kept = [], []
    for path in files:
        try:
            images.append(load_image(path, size))
            kept.append(path)
        except MTIConfigError:
            continue
    if not images:
        raise MTIConfigError(f"none of the {len(files)} image files decodes; nothing to measure")
    return torch.stack(images), kept


def data_pass(plan: Plan, images: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Activation and energies of every (unit, image): tensors ``(units, images)``.

    (unit, image) pairs go through the network ``batch_size`` at a time; everything stays on
    the device until the reduced per-pair values are complete.
    """
    lm, layer = plan.lm, plan.layer
    device = images.device
    shapes = layer_shapes(lm.model, lm.input_size, [layer])
    pairs = [(u, i) for u in plan.units for i in range(len(images))]
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in MEASURES}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        specs = [FeatureSpec(layer, u, plan.position) for u, _ in chunk]
        readout = Readout(specs, shapes).to(device)
        index = torch.tensor([i for _, i in chunk], device=device)
        att = attribute(lm, images[index], readout, [plan.attribution_layer])
        values = {"activation": att.activation, **att.energies[plan.attribution_layer].as_dict()}
        for k in MEASURES:
            parts[k].append(values[k].float())
    n_units, n_images = len(plan.units), len(images)
    return {k: torch.cat(v).view(n_units, n_images).cpu() for k, v in parts.items()}


def _measured(
    plan: Plan, images: torch.Tensor, names: list[str], run_dir: Path, batch: int
) -> dict[str, torch.Tensor]:
    """The data pass of ``plan``, reused from the run directory when it matches."""
    meta = {
        "model": plan.lm.source,
        "layer": plan.layer,
        "attribution_layer": plan.attribution_layer,
        "position": plan.position,
        "units": plan.units,
        "images": names,
    }
    tensors = run_dir / "data" / f"{plan.name}.safetensors"
    meta_path = tensors.with_suffix(".json")
    if tensors.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        return load_tensors(tensors)
    values = data_pass(plan, images, batch)
    save_tensors(tensors, values)
    write_json(meta_path, meta)
    return values


def _search(plan: Plan, cfg: dict[str, Any], run_dir: Path) -> dict[int, dict[str, Any]]:
    """One batched MTI search of the first ``compare.search_units`` units: row per unit."""
    from mti_lightning.search.job import run_search_job

    units = plan.units[: int(cfg["compare"]["search_units"])]
    if not units:
        return {}
    keys = ("seed", "search", "param", "transform", "trainer", "callbacks", "checkpoint")
    lg = cfg["logger"]
    sub = {k: cfg[k] for k in keys}
    sub["checkpoint"] = {**cfg["checkpoint"], "resume": False}
    sub["model"] = plan.model_cfg
    sub["target"] = {"layer": plan.layer, "channel": units, "position": plan.position}
    sub["search"] = {**cfg["search"], "kind": "mti", "attribution_layer": plan.attribution_layer}
    sub["logger"] = {
        **lg,
        "name": f"{lg.get('name') or run_dir.name}-{plan.name}",
        "group": lg.get("group") or run_dir.name,
    }
    out = run_dir / "searches" / plan.name
    done = out / "metrics.json"
    # what the search was run with (its logger aside), to know whether a finished one fits
    meta_path, meta = run_dir / "searches" / f"{plan.name}.json", {**sub, "logger": None}
    if done.is_file() and meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        record = json.loads(done.read_text())
    else:
        record = run_search_job(sub, out)
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
) -> list[dict[str, Any]]:
    """One comparison row per unit: orientation tuning, activation statistics, data tension,
    search tension."""
    rows = []
    for k, unit in enumerate(plan.units):
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


def _device(trainer: dict[str, Any]) -> torch.device:
    acc = str(trainer.get("accelerator", "cpu"))
    if acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def run_compare(cfg: dict[str, Any], run_dir: Path) -> list[dict[str, Any]]:
    """Run the comparison described by ``cfg`` into ``run_dir``; return its table rows."""
    run_dir = Path(run_dir)
    c = cfg["compare"]
    models = check_models(cfg["models"])
    for name in models:
        layer_spec(cfg["layers"], name, models)
    for key in ("batch_size", "n_images"):
        if int(c[key]) < 1:
            raise MTIConfigError(f"compare.{key}={c[key]}; need at least 1")
    if int(c["search_units"]) < 0:
        raise MTIConfigError(f"compare.search_units={c['search_units']}; need 0 or more")
    if int(c["tuning_images"]) < NUM_CLASSES:
        raise MTIConfigError(
            f"compare.tuning_images={c['tuning_images']}; need at least {NUM_CLASSES} "
            "(one per orientation), e.g. 1200"
        )
    recipes = recipes_to_train(cfg, models)
    plans = [plan_model(name, cfg, models) for name in models]
    records = train_models(cfg, recipes, run_dir)
    for i, name in enumerate(models):
        if name in records:
            weights, note, _ = records[name]
            plans[i] = plan_model(name, cfg, models, checkpoint=str(weights), note=note)
    files, folder, images_line = image_files(cfg, run_dir)
    t_images, t_labels = tuning_images(int(c["tuning_images"]), int(c["tuning_seed"]))
    device = _device(cfg["trainer"])
    rows, data, tunings, skipped = [], {}, {}, 0
    for plan in plans:
        images, kept = load_images(files, plan.lm.input_size[1:])
        names = [str(p.relative_to(folder)) for p in kept]
        plan.lm.to(device)
        values = _measured(plan, images.to(device), names, run_dir, int(c["batch_size"]))
        tunings[plan.name] = unit_tuning(plan, t_images, t_labels)
        plan.lm.to("cpu")
        data[plan.name] = values
        found = _search(plan, cfg, run_dir)
        rows += unit_rows(plan, values, names, found, tunings[plan.name])
        skipped = len(files) - len(kept)
    header = _header(cfg, plans, rows, images_line, skipped)
    training = {name: record for name, (_, _, record) in records.items()}
    write_report(cfg, run_dir, header, plans, rows, data, tunings, training, image_root=folder)
    return rows


def _header(
    cfg: dict[str, Any], plans: list[Plan], rows: list[dict], images_line: str, skipped: int
) -> str:
    """The report's header: image set, units, searches, which models are untrained, and how
    many units are never tense (zero E+ or E- on every image: e.g. a random-init timm ResNet,
    whose last BN of each block starts at zero, so a block computes the identity)."""
    c, s = cfg["compare"], cfg["search"]
    lines = [
        "MTI architecture comparison",
        f"images: {images_line}"
        + (f"; {skipped} files did not decode (skipped)" if skipped else ""),
        f"units: {c['units']} per model (seed {c['unit_seed']}); MTI search of "
        f"{c['search_units']} per model, {s['steps']} steps",
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
