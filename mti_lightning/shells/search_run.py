"""The search runner: a composed config -> a prepared ``MTISearch`` -> the engine's stages (the
search, then, for a kind that has them, the +/- inversions of its final images) -> what they
produced. The search journey writes and tracks the results; the comparison runs its searches
through the journey's ``run_search``.

The inversion stage is ``search.kind=invert`` of the final images: the same registered kind,
built by the same code, run by the same engine with the search's strategy, precision, step
network, parameterisation, transforms and seed (``search.inversions`` gives its steps, lr,
draws and power). Every check that can fail on bad input (options, model, layers, features,
image files) runs before the first optimisation step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from mti_lightning.core.attribution import attribute
from mti_lightning.core.config_checks import check_config
from mti_lightning.core.config_schema import MTIConfig, SearchSchema
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout, build_readout
from mti_lightning.core.inversion import inversion_targets
from mti_lightning.core.io import load_image
from mti_lightning.core.layer_choice import attribution_layer_auto, resolve_target
from mti_lightning.core.models import LoadedModel, load_seeded
from mti_lightning.core.parameterizations import make_parameterization
from mti_lightning.core.targets import parse_targets
from mti_lightning.core.transforms import TransformConfig
from mti_lightning.shells.callbacks import (
    ImageSnapshots,
    NonFiniteGuard,
    SearchEndCallback,
    StopAtTarget,
    TransparencyMaps,
)
from mti_lightning.shells.engine import EngineOptions, optimise
from mti_lightning.shells.kinds import KINDS, SearchKind, search_kind
from mti_lightning.shells.loggers import logger_from_config
from mti_lightning.shells.search import MTISearch
from mti_lightning.shells.trainer import check_trainer_options

# (config, run dir, model, features, attribution layer, image names) -> a callback the caller
# adds to the search (e.g. the atlas placement ``callbacks.atlas`` asks for)
CallbackFactory = Callable[
    [MTIConfig, Path, LoadedModel, Sequence[FeatureSpec], "str | None", Sequence[str]],
    L.Callback,
]


@dataclass
class Prepared:
    """Everything a search needs, built and validated before any optimisation."""

    kind: SearchKind
    lm: LoadedModel
    specs: list[FeatureSpec]
    readout: Readout
    search: MTISearch
    features: list[str]
    callbacks: dict[str, L.Callback] = field(default_factory=dict)


@dataclass
class SearchRun:
    """What the stages produced: the trainer of the search, its final images, the +/-
    inversions (None when the kind has none or they are off), the largest difference between
    the processes' images (None on one process) and the checkpoint resumed from."""

    prepared: Prepared
    trainer: L.Trainer
    images: torch.Tensor
    inversions: dict[str, torch.Tensor] | None
    agreement: float | None
    resumed_from: str | None
    logger: Any


def seed_images(images: Any, size: tuple[int, int]) -> torch.Tensor:
    """``search.image``: image file path(s), or (from the Python API) image tensors
    ``(3, H, W)`` / ``(K, 3, H, W)`` in [0, 1]; all brought to the canvas ``size``."""
    if images is None or (isinstance(images, (str, list, tuple)) and images in ("", "???", [], ())):
        raise MTIConfigError(
            "search.image is required for this kind; give an image file path (or, in Python, "
            "image=TENSOR)"
        )
    if isinstance(images, torch.Tensor):
        batch = images if images.dim() == 4 else images.unsqueeze(0)
        if batch.dim() != 4 or batch.shape[1] != 3:
            raise MTIConfigError(
                f"search.image tensor of shape {tuple(images.shape)}; give (3, H, W) or "
                "(K, 3, H, W) in [0, 1]"
            )
        batch = batch.detach().float().cpu()
        if tuple(batch.shape[2:]) != tuple(size):
            batch = F.interpolate(batch, size=size, mode="bilinear", antialias=True)
        return batch.clamp(0, 1)
    paths = [images] if isinstance(images, (str, Path)) else list(images)
    return torch.stack([load_image(p, size) for p in paths])


def load_from_config(cfg: MTIConfig) -> LoadedModel:
    """The model that ``cfg.model`` names (built-in, torchvision:NAME or timm), loaded with
    the run's seed (the same random-init weights as the atlas and comparison load)."""
    m = cfg.model
    return load_seeded(
        m.name, cfg.seed, m.pretrained, m.checkpoint, input_size=m.input_size, mean=m.mean, std=m.std
    )


def check_options(cfg: MTIConfig) -> SearchKind:
    """The search's kind, after checking its numbers and trainer options."""
    kind = search_kind(cfg.search.kind)
    check_config(cfg)
    t = cfg.trainer
    check_trainer_options(t.accelerator, str(t.precision), t.devices)
    return kind


def images_per_target(s: SearchSchema, kind: SearchKind) -> int:
    per = int(s.images_per_target)
    if per < 1 or (kind.per_image and per != 1):
        raise MTIConfigError(
            f"search.images_per_target={per}; need >= 1 (exactly 1 for kind={kind.name})"
        )
    return per


def pair_images(
    kind: SearchKind,
    s: SearchSchema,
    specs: list[FeatureSpec],
    per: int,
    size: tuple[int, int],
) -> tuple[list[FeatureSpec], torch.Tensor | None]:
    """One feature per image of the batch and the seed images beside them (None without
    ``search.image``): a ``per_image`` kind makes every target for every image; other kinds
    take one image for all or one per image."""
    seeds = None
    if kind.needs_image or s.image:
        seeds = seed_images(s.image, size)
        if kind.per_image:
            specs = [sp for sp in specs for _ in range(len(seeds))]
            seeds = seeds.repeat(len(specs) // len(seeds), 1, 1, 1)
        elif len(seeds) not in (1, len(specs) * per):
            raise MTIConfigError(
                f"{len(seeds)} seed images for {len(specs) * per} images; give 1 or one per image"
            )
    specs = [sp for sp in specs for _ in range(per)]
    if seeds is not None and len(seeds) == 1 and not kind.per_image:
        seeds = seeds.expand(len(specs), -1, -1, -1)
    return specs, seeds


def attribution_layer(
    s: SearchSchema, kind: SearchKind, lm: LoadedModel, readout: Readout
) -> str | None:
    """``search.attribution_layer`` resolved (``auto``) and checked upstream of the features."""
    layer = s.attribution_layer
    if layer == "auto":
        layer = attribution_layer_auto(lm, readout)
    if not layer and kind.needs_layer:
        raise MTIConfigError(
            f"search.attribution_layer={layer!r}; kind={kind.name} needs a layer upstream of the "
            "target (a module name, or auto)"
        )
    if layer:
        try:
            attribute(lm, torch.zeros(len(readout.specs), *lm.input_size), readout, [layer])
        except MTIConfigError as err:
            raise MTIConfigError(f"search.attribution_layer={layer!r}: {err}") from err
    return layer or None


def build_search(
    cfg: MTIConfig,
    kind: SearchKind,
    s: SearchSchema,
    lm: LoadedModel,
    readout: Readout,
    seeds: torch.Tensor | None,
    size: tuple[int, int],
) -> MTISearch:
    """The ``MTISearch`` of ``kind`` for the features of ``readout`` (one per image, or per
    image pair of an inversion), with search settings ``s`` (its attribution layer resolved)
    and the config's parameterisation, transforms and trainer flags."""
    specs = list(readout.specs)
    p, t = cfg.param, cfg.trainer
    shape = {k: v for k, v in (("decay", p.decay), ("scale", p.scale)) if v is not None}
    param = make_parameterization(p.kind, kind.n_images(len(specs)), size, seed=cfg.seed, **shape)
    if kind.starts_from_image and seeds is not None:
        param.seed_from(seeds.contiguous())
    measure = (
        readout
        if kind.reads_feature
        else Readout(specs * len(kind.parts), readout.shapes, readout.views)
    )
    search = MTISearch(
        lm,
        param,
        kind.objective(s, lm, readout, seeds),
        readout if kind.reads_feature else None,
        TransformConfig(**asdict(cfg.transform)),
        optimizer=s.optimizer,
        lr=s.lr,
        metric_layer=s.attribution_layer or None,
        redirect_relu_steps=s.redirect_relu_steps,
        compile=t.compile,
        fast_net=t.fast_net,
        measure_readout=measure,
    )
    search.name_units(kind.feature_names(specs), cfg.logger.max_unit_curves)
    return search


def search_callbacks(cfg: MTIConfig, run_dir: Path) -> dict[str, L.Callback]:
    """The callbacks the ``callbacks`` config group asks for."""
    c = cfg.callbacks
    cbs: dict[str, L.Callback] = {
        "guard": NonFiniteGuard(c.check_every),
        "snapshots": ImageSnapshots(run_dir / "snapshots", c.snapshot_steps, c.snapshot_every),
    }
    if c.transparency:
        cbs["transparency"] = TransparencyMaps()
    if c.stop_activation is not None:
        cbs["stop"] = StopAtTarget(c.stop_activation, c.check_every)
    return cbs


def prepare(
    cfg: MTIConfig,
    run_dir: Path,
    lm: LoadedModel | None = None,
    extra: Mapping[str, CallbackFactory] | None = None,
) -> Prepared:
    """Validate the config and build the search (fast; no optimisation yet). ``lm``: an
    already loaded model (the Python API's ``nn.Module``s), else ``cfg.model`` is loaded;
    ``extra``: callbacks the caller adds, by name, built once the features are known."""
    kind = check_options(cfg)
    s = cfg.search
    lm = lm if lm is not None else load_from_config(cfg)
    specs = parse_targets(resolve_target(cfg.target, lm.model, lm.input_size, lm.name))
    size = tuple(cfg.param.canvas or lm.input_size[1:])
    specs, seeds = pair_images(kind, s, specs, images_per_target(s, kind), size)
    readout = build_readout(lm.model, lm.input_size, specs)
    layer = attribution_layer(s, kind, lm, readout)
    search = build_search(cfg, kind, replace(s, attribution_layer=layer), lm, readout, seeds, size)
    features = kind.feature_names(specs)
    callbacks = search_callbacks(cfg, Path(run_dir))
    for name, factory in (extra or {}).items():
        callbacks[name] = factory(cfg, Path(run_dir), lm, specs, layer, features)
    return Prepared(kind, lm, specs, search.measure_readout, search, features, callbacks)


def inversion_settings(cfg: MTIConfig, layer: str) -> SearchSchema:
    """The search settings of the inversion stage: ``search.kind=invert`` at the search's
    attribution layer with ``search.inversions``' steps, lr, draws, power and match."""
    inv = cfg.search.inversions
    return replace(
        cfg.search,
        kind="invert",
        attribution_layer=layer,
        steps=inv.steps,
        lr=inv.lr,
        draws=inv.draws,
        power=inv.power,
        match=inv.match,
    )


def invert_images(
    cfg: MTIConfig,
    run_dir: Path,
    prepared: Prepared,
    images: torch.Tensor,
    options: EngineOptions,
) -> dict[str, torch.Tensor]:
    """The inversion stage: the +/- inversions of ``images`` (one per feature of
    ``prepared``) as ``search.kind=invert`` of them, run by the engine in
    ``run_dir/stages/inversions``; with the activation of the feature on each and, on a layer
    with non-patch tokens (a ViT's class token), the attribution energies of the grid
    (``grid_e_plus``, ``grid_e_minus``) and of those tokens (``prefix_e_plus``, ...)."""
    s = inversion_settings(cfg, prepared.search.metric_layer)
    kind = KINDS["invert"]
    seeds = images.detach().float().cpu()
    size = tuple(seeds.shape[2:])
    search = build_search(cfg, kind, s, prepared.lm, prepared.readout, seeds, size)
    targets = inversion_targets(
        prepared.lm, seeds, prepared.readout, s.attribution_layer, match=s.match
    )
    guard = NonFiniteGuard(cfg.callbacks.check_every)
    stage_dir = Path(run_dir) / "stages" / "inversions"
    resume = cfg.checkpoint.resume
    optimise(search, s.steps, s.draws, cfg.seed, stage_dir, options, False, [guard], resume)
    k = len(images)
    out = search().detach()
    # a stage resumed from its finished checkpoint runs no step, so measures nothing itself
    act = (search.measured.get("end") or search.measure())["activation"]
    # a transformer's non-patch tokens (class token...) hold attribution no image can match
    aside = {k: v.cpu() for k, v in targets.aside.items()} if targets.view.prefix else {}
    return {
        "plus": out[:k],
        "minus": out[k:],
        "plus_activation": act[:k],
        "minus_activation": act[k:],
        **aside,
    }


def _ddp_agreement(trainer: L.Trainer, images: torch.Tensor) -> float | None:
    """Largest difference between any process's images and rank 0's (None on one process)."""
    if trainer.world_size < 2:
        return None
    gathered = trainer.strategy.all_gather(images)
    return float((gathered - gathered[0:1]).abs().max())


def run_stages(
    cfg: MTIConfig,
    run_dir: Path,
    lm: LoadedModel | None = None,
    logger: Any = None,
    extra: Mapping[str, CallbackFactory] | None = None,
) -> SearchRun:
    """Prepare the search of ``cfg`` and run its stages into ``run_dir`` (on every process of
    a DDP run). ``logger``: a Lightning logger to use instead of the one ``cfg.logger``
    describes; ``extra``: see :func:`prepare`."""
    run_dir = Path(run_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    prepared = prepare(cfg, run_dir, lm, extra)
    s, search = cfg.search, prepared.search
    logger = logger_from_config(cfg, run_dir) if logger is None else logger
    options = EngineOptions.from_config(cfg)
    callbacks = list(prepared.callbacks.values())
    trainer, resumed = optimise(
        search,
        s.steps,
        s.draws,
        cfg.seed,
        run_dir,
        options,
        logger,
        callbacks,
        cfg.checkpoint.resume,
    )
    images = search().detach()
    inversions = None
    if prepared.kind.inversions and s.inversions.enabled and search.metric_layer:
        inversions = invert_images(cfg, run_dir, prepared, images, options)
    for cb in callbacks:
        if isinstance(cb, SearchEndCallback):
            cb.on_search_end(trainer, search, inversions)
    agreement = _ddp_agreement(trainer, images)
    return SearchRun(prepared, trainer, images, inversions, agreement, resumed, logger)
