"""The public Python API, in the paper's order: load a model, find maximally tense images
(MTIs), visualise a feature, split an image into its excitatory and inhibitory components
(+/- attribution inversion), accentuate, attribute, map a data set (the attribution atlas),
compare architectures.

    import mti_lightning as mti
    net = mti.load_model("torchvision:resnet18")
    result = mti.search(net, "layer3.0.bn1:1", steps=100)   # shows itself in Jupyter
    result.rows, result.images, result.run_dir

Every function composes the same config the ``mti`` command composes (``conf/``), updates it
with its arguments through one resolver (``face/api_config.build_config``), checks it once
against the schema (``core/config_schema.py``), and runs the same code
(``search.job.run_search``, ``atlas.run_atlas``, ``compare.run.run_compare``,
``world.train_job.run_training``): nothing exists in only one of the two faces. Each returns a
result object with ``.run_dir``, ``.rows`` and a notebook display. Options mirror the config
keys: a bare key of the call's own group first (``lr=0.1`` is ``search.lr`` in a search and
``train.lr`` in ``train``; ``grid`` is ``atlas.grid``; ``units`` is ``compare.units``), else of
the one shared group holding it (``canvas=[64, 64]`` is ``param.canvas``, ``jitter=0.1`` is
``transform.jitter``), a dotted key
(``**{"search.inversions.steps": 20}``), a group as a dict (``transform={"rotate": 5}``), or a
group's choice by name (``param="pixel"``, ``transform="none"``, ``trainer="ddp"``). Lightning's
``devices``, ``strategy``, ``precision``, ``accelerator`` and ``num_nodes`` go to the trainer;
``logger`` is ``"wandb"`` (the default, offline without an API key), ``"csv"``, ``None`` or a
Lightning logger.

Each run writes into its own directory: ``run_dir`` when given, else
``outputs/api/DATE/TIME`` under the working directory (as the ``mti`` command's
``outputs/DATE/TIME``), so nothing a notebook made is lost when the kernel stops.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.models import load_model as _load_model
from mti_lightning.face.api_config import build_config, loaded_model, run_dir_for, write_config
from mti_lightning.face.console import quiet_console
from mti_lightning.face.results import CompareResult, TrainResult

if TYPE_CHECKING:
    from mti_lightning.core.attribution import Attribution
    from mti_lightning.journeys.atlas.result import AtlasResult
    from mti_lightning.journeys.census.result import CensusResult
    from mti_lightning.journeys.circuit.result import CircuitResult
    from mti_lightning.journeys.decompose.result import DecomposeResult
    from mti_lightning.journeys.search.result import SearchResult

Model = str | nn.Module | LoadedModel
Images = torch.Tensor | str | Path | Sequence[str | Path]


# -- models -------------------------------------------------------------------------------


def load_model(
    model: Model,
    input_size: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    pretrained: bool = False,
    checkpoint: str | Path | None = None,
) -> LoadedModel:
    """A frozen model and the input it expects, from a built-in name (``curvenet``),
    ``torchvision:NAME``, a timm name, or any ``nn.Module`` (then ``input_size`` (C, H, W) is
    required; ``mean``/``std`` default to ImageNet's). ``pretrained`` fetches the library's
    default weights (network needed; an unreachable download is a clear error, and
    ``checkpoint=PATH`` loads local weights instead)."""
    return _load_model(model, pretrained, checkpoint, input_size=input_size, mean=mean, std=std)


# -- searches -----------------------------------------------------------------------------


def search(
    model: Model,
    targets: Any,
    kind: str = "mti",
    steps: int | None = None,
    run_dir: str | Path | None = None,
    **options: Any,
) -> SearchResult:
    """Optimise images for ``targets`` (``LAYER:CHANNEL@POSITION``, a list of them, or
    ``{layer, channel, position}``), all in one batched search. ``kind``: ``mti`` (maximally
    tense images with their +/- inversions), ``visualize``, ``visualize_neg``, ``invert`` or
    ``accentuate`` (the last two need ``image=``). ``steps`` defaults to the config's."""
    from mti_lightning.journeys.search.job import run_search
    from mti_lightning.shells.kinds import KINDS

    quiet_console()
    if kind not in KINDS:
        raise MTIConfigError(f"kind {kind!r}; valid: {', '.join(KINDS)}")
    group = "visualize" if kind == "visualize_neg" else kind
    fixed = {"search.kind": kind, "target": targets}
    if steps is not None:
        fixed["search.steps"] = steps
    cfg, logger = build_config([f"search={group}"], model, options, "search", fixed)
    lm = loaded_model(model, cfg)
    out = run_dir_for(run_dir)
    from mti_lightning.face.tasks import search_extras

    # bad input fails before anything is written
    result = run_search(cfg, out, lm, logger, search_extras(cfg))
    if result is None:
        raise RuntimeError("search ran on a process other than rank 0; use rank 0's result")
    write_config(cfg, out, lm)
    return result


def visualize(model: Model, targets: Any, negative: bool = False, **options: Any) -> SearchResult:
    """Feature visualisation: images that maximise ``targets`` (``negative``: minimise them,
    showing what inhibits the feature)."""
    return search(model, targets, "visualize_neg" if negative else "visualize", **options)


def invert(
    model: Model, images: Images, targets: Any, layer: str = "auto", **options: Any
) -> SearchResult:
    """+/- attribution inversion: for each image and target, one image rendered from noise to
    match the excitatory part of its attribution at ``layer`` and one for the inhibitory
    part. ``images``: file path(s) or a tensor ``(3, H, W)`` / ``(K, 3, H, W)`` in [0, 1]."""
    options = {**options, "search.image": images, "search.attribution_layer": layer}
    return search(model, targets, "invert", **options)


def accentuate(model: Model, images: Images, targets: Any, **options: Any) -> SearchResult:
    """Accentuation: raise ``targets`` starting from the images themselves, staying close to
    them (``sign=-1`` lowers the feature)."""
    return search(model, targets, "accentuate", **{**options, "search.image": images})


# -- attribution --------------------------------------------------------------------------


def _image_batch(images: Images, size: tuple[int, int] | None) -> torch.Tensor:
    from mti_lightning.shells.search_run import seed_images as _seed_images

    if isinstance(images, torch.Tensor) and size is None:
        return images if images.dim() == 4 else images.unsqueeze(0)
    return _seed_images(images, size)


def attribute(
    model: Model,
    images: Images,
    targets: Any,
    layers: str | Sequence[str] = "auto",
    input_size: Sequence[int] | None = None,
) -> Attribution:
    """Attribution ``act_L * d f / d act_L`` of each image's feature at each of ``layers``
    (``auto``: the model's own attribution layer, else the block boundary before the
    feature): ``.maps[layer]``, ``.energies[layer]`` (``e_plus``, ``e_minus``, ``tension``,
    ...) and ``.activation``. One target serves every image; one image serves every target."""
    from mti_lightning.core.attribution import attribute as core_attribute
    from mti_lightning.core.features import build_readout
    from mti_lightning.core.layer_choice import attribution_layer_auto, resolve_target
    from mti_lightning.core.targets import parse_targets

    lm = _load_model(model, input_size=input_size)
    batch = _image_batch(images, None if isinstance(images, torch.Tensor) else lm.input_size[1:])
    size = (lm.input_size[0], *batch.shape[2:])
    specs = parse_targets(resolve_target(targets, lm.model, size, lm.name))
    if len(specs) == 1 and len(batch) > 1:
        specs = specs * len(batch)
    elif len(batch) == 1 and len(specs) > 1:
        batch = batch.expand(len(specs), -1, -1, -1)
    if len(specs) != len(batch):
        raise MTIConfigError(
            f"{len(batch)} images and {len(specs)} targets; give one target for all images, "
            "one image for all targets, or as many of each"
        )
    readout = build_readout(lm.model, size, specs)
    names = [layers] if isinstance(layers, str) else list(layers)
    device = next(iter(lm.model.parameters()), torch.zeros(0)).device
    if "auto" in names:
        auto = attribution_layer_auto(lm, readout)
        names = [auto if n == "auto" else n for n in names]
    return core_attribute(lm, batch.to(device), readout.to(device), names)


# -- data sets ----------------------------------------------------------------------------


def atlas(
    model: Model,
    target: Any,
    data: Any = "curves",
    layers: str | Sequence[str] = "auto",
    run_dir: str | Path | None = None,
    stage: str | None = None,
    **options: Any,
) -> AtlasResult:
    """The attribution atlas of one feature over ``data``: a folder of images, a torch
    ``Dataset`` (items ``image`` or ``(image, label)``; PIL images or tensors in [0, 1]),
    ``torchvision:NAME`` or ``curves`` (the built-in curve images). ``options`` are the
    ``atlas.*`` keys (``grid``, ``icon_steps``, ``curves_n``, ...). Re-running into the same
    ``run_dir`` skips every stage whose result is up to date."""
    from mti_lightning.journeys.atlas.face import atlas_from_config

    quiet_console()
    dataset = None if isinstance(data, (str, Path)) else data
    fixed = {
        "atlas.layers": [layers] if isinstance(layers, str) else list(layers),
        "atlas.data": str(data) if dataset is None else f"dataset:{type(data).__name__}",
        "target": target,
    }
    cfg, logger = build_config(["experiment=atlas"], model, options, "atlas", fixed)
    lm = loaded_model(model, cfg)
    out = run_dir_for(run_dir)
    result = atlas_from_config(cfg, out, stage, lm=lm, dataset=dataset, logger=logger)
    write_config(cfg, out, lm)
    return result


def census(
    model: Model,
    layers: Any = ("all",),
    data: Any = "curves",
    run_dir: str | Path | None = None,
    **options: Any,
) -> CensusResult:
    """The inhibition census: E+, E-, tension and tension ratio of every unit of ``layers``
    (names, relative depths in (0, 1], or ``all``) over ``data`` (``curves``, ``photos``, a
    folder, ``torchvision:NAME`` or a torch ``Dataset``), ranked across the model into
    ``<run_dir>/census/units.json``, ``data/<layer>.safetensors`` and ``depth.png``.
    ``options``: the ``census.*`` keys (``units``, ``position``, ``threshold``, ``top_k``,
    ``jobs``/``job``, ...). Re-running into the same ``run_dir`` redoes only what changed."""
    from mti_lightning.journeys.census import run_census

    quiet_console()
    dataset = None if isinstance(data, (str, Path)) else data
    names = [layers] if isinstance(layers, (str, int, float)) else list(layers)
    fixed = {
        "census.layers": names,
        "census.data": str(data) if dataset is None else f"dataset:{type(data).__name__}",
    }
    cfg, logger = build_config(["experiment=census"], model, options, "census", fixed)
    lm = loaded_model(model, cfg)
    out = run_dir_for(run_dir)
    result = run_census(cfg, out, lm=lm, dataset=dataset, logger=logger)
    if result is None:
        raise RuntimeError("census ran on a process other than rank 0; use rank 0's result")
    write_config(cfg, out, lm)
    return result


def circuit(
    model: Model,
    target: Any,
    data: Any = "curves",
    layer: str = "auto",
    k: int = 8,
    depth: int = 1,
    run_dir: str | Path | None = None,
    **options: Any,
) -> CircuitResult:
    """The inhibition circuit of one unit ``target`` at ``layer`` (``auto``: the model's
    attribution layer) over ``data`` (as the atlas's: a folder, a torch ``Dataset``,
    ``curves``, ``photos[:...]``, ``torchvision:NAME``): every channel's share of the unit's
    E- and E+, its expanded weight and cancellation flag, the top ``k`` inhibitory and
    excitatory channels with their feature visualisations and kernels (``depth=2``: one more
    layer upstream), the ablation against random channels and the echo. ``options``: the
    ``circuit.*`` keys (``curves_n``, ``tense_fraction``, ``viz_steps``, ``echo``, ...)
    and the shared ones. Returns a :class:`~mti_lightning.journeys.circuit.result.CircuitResult`
    (``.rows`` one per channel, ``.record``, ``.figure``)."""
    from mti_lightning.journeys.circuit.run import run_circuit

    quiet_console()
    dataset = None if isinstance(data, (str, Path)) else data
    fixed = {
        "circuit.data": str(data) if dataset is None else f"dataset:{type(data).__name__}",
        "circuit.layer": layer,
        "circuit.k": k,
        "circuit.depth": depth,
        "target": target,
    }
    cfg, _ = build_config(["experiment=circuit"], model, options, "circuit", fixed)
    lm = loaded_model(model, cfg)
    out = run_dir_for(run_dir)
    result = run_circuit(cfg, out, lm=lm, dataset=dataset)
    if result is None:
        raise RuntimeError("circuit ran on a process other than rank 0; use rank 0's result")
    write_config(cfg, out, lm)
    return result


def decompose(
    model: Model,
    target: Any,
    data: Any = "curves",
    k: int | str = "auto",
    parts: Sequence[str] = ("plus", "minus"),
    layer: str = "auto",
    run_dir: str | Path | None = None,
    **options: Any,
) -> DecomposeResult:
    """Decomposed attributions of one unit ``target`` at ``layer`` (``auto``: the model's
    attribution layer) over ``data`` (as the atlas's): the E+ and E- parts of its attribution
    (images x channels, summed over positions), each split by NMF into ``k`` components
    (``auto``: the smallest k explaining ``fraction`` of the part's Frobenius norm), each with
    its channel weights, share, top data images and an image rendered by the engine to match
    it. ``parts``: ``plus``, ``minus`` or both. ``options``: the ``decompose.*`` keys
    (``fraction``, ``render_steps``, ``curves_n``, ...) and the shared ones. Returns a
    :class:`~mti_lightning.journeys.decompose.result.DecomposeResult`."""
    from mti_lightning.journeys.decompose.run import run_decompose

    quiet_console()
    dataset = None if isinstance(data, (str, Path)) else data
    fixed = {
        "decompose.data": str(data) if dataset is None else f"dataset:{type(data).__name__}",
        "decompose.layer": layer,
        "decompose.k": k,
        "decompose.parts": list(parts),
        "target": target,
    }
    cfg, _ = build_config(["experiment=decompose"], model, options, "decompose", fixed)
    lm = loaded_model(model, cfg)
    out = run_dir_for(run_dir)
    result = run_decompose(cfg, out, lm=lm, dataset=dataset)
    if result is None:
        raise RuntimeError("decompose ran on a process other than rank 0; use rank 0's result")
    write_config(cfg, out, lm)
    return result


def compare(
    models: Sequence[str],
    layers: Any = 0.5,
    run_dir: str | Path | None = None,
    **options: Any,
) -> CompareResult:
    """Compare architectures: orientation tuning, E+, E-, tension and tension ratio of the
    units of one layer per model (``layers``: a relative depth, a layer name, or ``{model: ...,
    default: ...}``) on a common image set, plus an MTI search of a few units per model; timm
    models without weights are trained on the curves world first (or reused from the cache).
    ``options``: the ``compare.*`` keys (``units``, ``n_images``, ``search_units``, ``train``,
    ``recipes``, ``cache_dir``, ...) and the search's. Returns the table's rows (a
    :class:`~mti_lightning.face.results.CompareResult`: iterate it as the list of rows; it shows
    the report in Jupyter); the report lands in the run directory."""
    from mti_lightning.journeys.compare.run import run_compare
    from mti_lightning.journeys.search.job import run_search_job

    quiet_console()
    fixed = {"models": list(models), "layers": layers}
    cfg, _ = build_config(["experiment=compare"], None, options, "compare", fixed)
    out = run_dir_for(run_dir)
    write_config(cfg, out)
    return CompareResult(out, run_compare(cfg, out, run_search_job))


def train(model: str, run_dir: str | Path | None = None, **options: Any) -> TrainResult | None:
    """Train network ``model`` (a timm name, ``torchvision:NAME`` or ``curvenet``) from random
    init on the curves world, or an ImageFolder (``data=PATH``), as ``mti experiment=train``
    does. ``options``: the ``train.*`` keys (``epochs``, ``lr``, ``train_size``, ...; unset
    ones come from the model's measured recipe) and Lightning's. Returns the record of the
    weights as a :class:`~mti_lightning.face.results.TrainResult` (``result["weights"]``, which
    ``load_model(model, checkpoint=...)`` loads; constructor, recipe, held-out accuracy,
    training time)."""
    from mti_lightning.world.train_job import run_training

    quiet_console()
    if not isinstance(model, str):
        raise MTIConfigError(
            f"train takes a model name (timm, torchvision:NAME or curvenet), not a "
            f"{type(model).__name__}"
        )
    cfg, logger = build_config(["experiment=train"], model, options, "train")
    out = run_dir_for(run_dir)
    record = run_training(cfg, out, logger=logger)
    if record is None:  # a DDP process other than the first
        return None
    write_config(cfg, out)
    return TrainResult(out, record)
