"""The main job: one MTISearch (MTI, feature visualisation, inversion or accentuation) from a
config, its +/- inversions, and a run directory with everything it produced. The ``mti``
command and the Python API (``mti_lightning.api``) both run searches through
:func:`run_search`.

Every check that can fail on bad input (options, model, layers, features, image files) runs
before the first optimisation step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from mti_lightning.core.attribution import attribute
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, Readout, build_readout
from mti_lightning.core.inversion import inversion_objective
from mti_lightning.core.io import load_image
from mti_lightning.core.layer_choice import attribution_layer_auto, resolve_target
from mti_lightning.core.models import LoadedModel, load_model
from mti_lightning.core.objectives import Activation, L2ToSeed, Objective, Tension
from mti_lightning.core.parameterizations import make_parameterization
from mti_lightning.core.targets import parse_targets
from mti_lightning.core.transforms import TransformConfig
from mti_lightning.search.options import check_search_numbers
from mti_lightning.search.result import SearchResult
from mti_lightning.search.summary import summary_rows
from mti_lightning.search.tracking import run_facts, summary_values, track_search
from mti_lightning.shells.callbacks import (
    ImageSnapshots,
    NonFiniteGuard,
    PlusMinusInversions,
    StopAtTarget,
    TransparencyMaps,
)
from mti_lightning.shells.draws import DrawDataModule
from mti_lightning.shells.loggers import logger_from_config
from mti_lightning.shells.search import MTISearch
from mti_lightning.shells.trainer import check_trainer_options, make_trainer
from mti_lightning.shells.wandb_record import UnitCurvePanels

KINDS = ("mti", "visualize", "visualize_neg", "invert", "accentuate")


@dataclass
class Prepared:
    """Everything a search needs, built and validated before any optimisation."""

    lm: LoadedModel
    specs: list[FeatureSpec]
    readout: Readout
    search: MTISearch
    features: list[str]
    callbacks: dict[str, L.Callback] = field(default_factory=dict)


def _seed_images(images: Any, size: tuple[int, int]) -> torch.Tensor:
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


def _objective(
    kind: str, s: dict, lm: LoadedModel, readout: Readout, seeds: torch.Tensor | None
) -> tuple[Objective, Readout | None]:
    """The objective of ``kind`` and the readout the search should evaluate each step."""
    if kind == "mti":
        hold = s.get("hold")
        return Tension(
            s["attribution_layer"], s["mode"], s["temperature"], hold, s["hold_weight"]
        ), readout
    if kind in ("visualize", "visualize_neg"):
        return Activation(1.0 if kind == "visualize" else -1.0), readout
    if kind == "accentuate":
        return Activation(float(s.get("sign", 1.0))) + s["l2_weight"] * L2ToSeed(seeds), readout
    return inversion_objective(lm, seeds, readout, s["attribution_layer"], s["power"]), None


def load_from_config(cfg: dict) -> LoadedModel:
    """The model that ``cfg['model']`` names (built-in, torchvision:NAME or timm)."""
    m = cfg["model"]
    return load_model(
        m["name"],
        m.get("pretrained", False),
        m.get("checkpoint"),
        input_size=m.get("input_size"),
        mean=m.get("mean"),
        std=m.get("std"),
    )


def prepare(cfg: dict, run_dir: Path, lm: LoadedModel | None = None) -> Prepared:
    """Validate the config and build the search (fast; no optimisation yet). ``lm``: an
    already loaded model (the Python API's ``nn.Module``s), else ``cfg['model']`` is loaded."""
    s, t = cfg["search"], cfg["trainer"]
    kind = s["kind"]
    if kind not in KINDS:
        raise MTIConfigError(f"search.kind {kind!r}; valid: {', '.join(KINDS)}")
    check_search_numbers(cfg)
    check_trainer_options(t["accelerator"], str(t["precision"]), t["devices"])
    for key in ("compile", "fast_net"):
        if not isinstance(t.get(key, False), bool):
            raise MTIConfigError(f"trainer.{key}={t[key]!r}; must be true or false")
    lm = lm if lm is not None else load_from_config(cfg)
    specs = parse_targets(resolve_target(cfg["target"], lm.model, lm.input_size, lm.name))
    per = int(s.get("images_per_target", 1))
    if per < 1 or (kind == "invert" and per != 1):
        raise MTIConfigError(
            f"search.images_per_target={per}; need >= 1 (exactly 1 for kind=invert)"
        )
    size = tuple(cfg["param"].get("canvas") or lm.input_size[1:])
    seeds = None
    if kind in ("invert", "accentuate") or s.get("image"):
        seeds = _seed_images(s.get("image"), size)
        if kind == "invert":
            specs = [sp for sp in specs for _ in range(len(seeds))]
            seeds = seeds.repeat(len(specs) // len(seeds), 1, 1, 1)
        elif len(seeds) not in (1, len(specs) * per):
            raise MTIConfigError(
                f"{len(seeds)} seed images for {len(specs) * per} images; give 1 or one per image"
            )
    specs = [sp for sp in specs for _ in range(per)]
    readout = build_readout(lm.model, lm.input_size, specs)
    layer = s.get("attribution_layer")
    if layer == "auto":
        layer = attribution_layer_auto(lm, readout)
        s = {**s, "attribution_layer": layer}
    if not layer and kind in ("mti", "invert"):
        raise MTIConfigError(
            f"search.attribution_layer={layer!r}; kind={kind} needs a layer upstream of the "
            "target (a module name, or auto)"
        )
    if layer:
        try:
            attribute(lm, torch.zeros(len(specs), *lm.input_size), readout, [layer])
        except MTIConfigError as err:
            raise MTIConfigError(f"search.attribution_layer={layer!r}: {err}") from err
    if seeds is not None and len(seeds) == 1 and kind != "invert":
        seeds = seeds.expand(len(specs), -1, -1, -1)
    n_images = 2 * len(specs) if kind == "invert" else len(specs)
    p = cfg["param"]
    param = make_parameterization(
        p["kind"],
        n_images,
        size,
        seed=cfg["seed"],
        **{k: v for k, v in p.items() if k in ("decay", "scale") and v is not None},
    )
    if kind in ("accentuate", "mti") and seeds is not None:
        param.seed_from(seeds.contiguous())
    objective, step_readout = _objective(kind, s, lm, readout, seeds)
    eval_readout = step_readout if step_readout is not None else Readout(specs * 2, readout.shapes)
    search = MTISearch(
        lm,
        param,
        objective,
        step_readout,
        TransformConfig(**cfg["transform"]),
        optimizer=s["optimizer"],
        lr=s["lr"],
        metric_layer=layer,
        redirect_relu_steps=s.get("redirect_relu_steps", 0),
        compile=t.get("compile", False),
        fast_net=t.get("fast_net", True),
        measure_readout=eval_readout,
    )
    features = [str(sp) for sp in specs]
    if kind == "invert":
        features = [f"{f} (+)" for f in map(str, specs)] + [f"{f} (-)" for f in map(str, specs)]
    search.name_units(features, cfg["logger"].get("max_unit_curves", 16))
    callbacks = _callbacks(cfg, run_dir, kind, layer)
    if cfg["callbacks"].get("atlas"):
        from mti_lightning.atlas.callback import atlas_callback

        callbacks["atlas"] = atlas_callback(cfg, run_dir, lm, specs, layer, features)
    return Prepared(lm, specs, eval_readout, search, features, callbacks)


def _callbacks(cfg: dict, run_dir: Path, kind: str, layer: str | None) -> dict[str, L.Callback]:
    c, s = cfg["callbacks"], cfg["search"]
    cbs: dict[str, L.Callback] = {
        "guard": NonFiniteGuard(c["check_every"]),
        "snapshots": ImageSnapshots(
            run_dir / "snapshots", c["snapshot_steps"], c["snapshot_every"]
        ),
    }
    if c["transparency"]:
        cbs["transparency"] = TransparencyMaps()
    if c.get("stop_activation") is not None:
        cbs["stop"] = StopAtTarget(c["stop_activation"], c["check_every"])
    cbs["curve_panels"] = UnitCurvePanels()
    inv = s.get("inversions") or {}
    if kind == "mti" and inv.get("enabled") and layer:
        cbs["inversions"] = PlusMinusInversions(
            layer, inv["steps"], inv["lr"], inv["draws"], inv["power"], seed=cfg["seed"]
        )
    return cbs


def _ddp_agreement(trainer: L.Trainer, images: torch.Tensor) -> float | None:
    """Largest difference between any process's images and rank 0's (None on one process)."""
    if trainer.world_size < 2:
        return None
    gathered = trainer.strategy.all_gather(images)
    return float((gathered - gathered[0:1]).abs().max())


def run_search(
    cfg: dict, run_dir: Path, lm: LoadedModel | None = None, logger: Any = None
) -> SearchResult | None:
    """Run the search described by ``cfg`` into ``run_dir`` and return what it found (None on
    the processes other than rank 0 of a DDP run). The ``mti`` command and the Python API both
    come here. ``lm``: an already loaded model; ``logger``: a Lightning logger to use instead
    of the one ``cfg['logger']`` describes."""
    run_dir = Path(run_dir)
    L.seed_everything(cfg["seed"], workers=True, verbose=False)
    prepared = prepare(cfg, run_dir, lm)
    s, t = cfg["search"], cfg["trainer"]
    logger = logger_from_config(cfg, run_dir) if logger is None else logger
    trainer = make_trainer(
        run_dir,
        s["steps"],
        accelerator=t["accelerator"],
        devices=t["devices"],
        num_nodes=t["num_nodes"],
        strategy=t["strategy"],
        precision=str(t["precision"]),
        logger=logger,
        callbacks=list(prepared.callbacks.values()),
        checkpoint_every=cfg["checkpoint"]["every_n_steps"],
        log_every_n_steps=t["log_every_n_steps"],
        progress_bar=t.get("progress_bar", False),
        requeue_signal=t.get("requeue_signal", "USR2"),
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = str(last) if cfg["checkpoint"].get("resume") and last.exists() else None
    search = prepared.search
    datamodule = DrawDataModule(search.transform, s["draws"], cfg["seed"])
    trainer.fit(search, datamodule=datamodule, ckpt_path=ckpt)
    images = search().detach()
    agreement = _ddp_agreement(trainer, images)
    if not trainer.is_global_zero:
        return None
    ckpt = ckpt or trainer.ckpt_path  # a SLURM requeue resumes from its hpc checkpoint
    return _write_results(cfg, run_dir, prepared, trainer, images, agreement, logger, ckpt)


def run_search_job(cfg: dict, run_dir: Path) -> dict[str, Any]:
    """:func:`run_search`'s metrics record (empty on the processes other than rank 0)."""
    result = run_search(cfg, run_dir)
    return result.record if result is not None else {}


def _write_results(
    cfg, run_dir, prepared, trainer, images, agreement, logger, ckpt
) -> SearchResult:
    search, cbs, s = prepared.search, prepared.callbacks, cfg["search"]
    inv = cbs["inversions"].result if "inversions" in cbs else {}
    start = search.measured.get("start", {})
    end = search.measured.get("end", {})
    rows = summary_rows(prepared.features, start, end, inv or None)
    if "atlas" in cbs:  # atlas_* columns: where each image lies on its feature's atlas
        rows = [r | c for r, c in zip(rows, cbs["atlas"].columns())]
    images = images.float().cpu()
    alpha = cbs["transparency"].alpha if "transparency" in cbs else None
    guard = cbs["guard"]
    record = {
        "kind": cfg["search"]["kind"],
        "model": prepared.lm.source,
        "model_trained": prepared.lm.trained,
        "attribution_layer": search.metric_layer,
        "steps_run": trainer.global_step,
        "resumed_from": ckpt,
        "nonfinite_step": guard.bad_step,
        "stopped_at_target": getattr(cbs.get("stop"), "stopped_at", None),
        "world_size": trainer.world_size,
        "ddp_max_image_diff": agreement,
        "step_network": prepared.search.step_net.describe() if prepared.search.step_net else None,
        "images": rows,
        "run": run_facts(s["kind"], prepared.lm, prepared.specs, search.metric_layer),
        "summary": summary_values(
            search.unit_names, rows, trainer.global_step, search.metric_layer is not None
        ),
    }
    title = f"{cfg['search']['kind']} on {prepared.lm.name} ({prepared.lm.source})"
    result = SearchResult(images, rows, record, title, inv or None, alpha, run_dir)
    result.save(run_dir)
    track_search(logger, cfg, run_dir, record, search.unit_names, images, inv or None, alpha)
    print(result.table())
    print(f"mti: run directory {run_dir}")
    return result
