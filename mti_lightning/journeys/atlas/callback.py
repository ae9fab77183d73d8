"""``AtlasEmbedding``: place a search's images on the atlas of their feature, as the search runs.

At the start, every ``every_n_steps`` steps and at the end, the search images' attribution
vectors at the atlas layer are computed exactly as the atlas's dataset pass computes them
(``dataset_pass.reduce_batch``: same layer, same readout of the feature, the attribution
summed over positions, images at the model's input size) and kept on the device; no host
sync happens in a step beyond that forward and backward. At the end of the search, the final
images' vectors and those of their +/- inversions (when the search made them) join them, and
all are embedded with the atlas's UMAP ``transform`` in one call. That end runs in
``on_search_end``, once the search runner's inversion stage is done. Under DDP every process
holds the same images; rank 0 alone does the work.

Outputs in ``out_dir``: ``placement.json`` (positions, trajectories, figures),
``placement.csv`` (one row per image), ``placement.png`` (the atlas with the images marked)
and the images as ``image_NNN.png``; :meth:`AtlasEmbedding.columns` gives the per-image
columns merged into the search's results rows, and the figure goes to W&B when its logger is on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from mti_lightning.core.config_schema import ModelSchema, MTIConfig
from mti_lightning.core.errors import MTIConfigError
from mti_lightning.core.features import FeatureSpec, build_readout
from mti_lightning.core.io import atomic_write, save_png, write_json
from mti_lightning.core.models import LoadedModel
from mti_lightning.core.transforms import resize
from mti_lightning.journeys.atlas.dataset_pass import reduce_batch
from mti_lightning.journeys.atlas.placement import AtlasMap, load_atlas
from mti_lightning.journeys.atlas.placement_figure import placement_figure
from mti_lightning.shells.callbacks import SearchEndCallback

PLACEMENT = "placement.json"
COLUMNS = (
    "cell",
    "cell_icon_activation",
    "cell_mean_activation",
    "cell_tense",
    "nn_dist",
    "nn_dist_hd",
    "on_map",
)


def check_search(
    atlas: AtlasMap,
    model: ModelSchema,
    specs: Sequence[FeatureSpec],
    layer: str | None,
    key: str = "callbacks.atlas",
) -> None:
    """A clear error when the search's model, feature or attribution layer is not the atlas's."""
    a = atlas.cfg
    where = f"{key}={atlas.run_dir}"
    ours = (a.model, a.pretrained, a.checkpoint or None)
    theirs = (model.name, model.pretrained, model.checkpoint or None)
    if ours != theirs:
        raise MTIConfigError(
            f"{where} is an atlas of model {a.model} (pretrained={a.pretrained}, "
            f"checkpoint={a.checkpoint or None}), the search's model.name={theirs[0]} "
            f"(pretrained={theirs[1]}, checkpoint={theirs[2]}); search that model or give its atlas"
        )
    bad = sorted({str(s) for s in specs} - {str(a.spec)})
    if bad:
        raise MTIConfigError(
            f"{where} is the atlas of feature {a.spec}, the search's target is {', '.join(bad)}; "
            f"use target={a.spec} or that feature's atlas"
        )
    if layer and layer != a.atlas_layer:
        raise MTIConfigError(
            f"{where} embeds attribution at layer {a.atlas_layer}, the search's "
            f"search.attribution_layer={layer}; use search.attribution_layer={a.atlas_layer}"
        )


class AtlasEmbedding(SearchEndCallback):
    """Record where a search's images fall on an atlas (see the module docstring).

    ``atlas``: an atlas run directory (or an already loaded :class:`AtlasMap`);
    ``every_n_steps``: trajectory spacing in steps (0: start and end only); ``out_dir``: where
    the placement files go (None: nowhere, results only in :attr:`result`)."""

    def __init__(
        self,
        atlas: str | Path | AtlasMap,
        every_n_steps: int = 10,
        out_dir: str | Path | None = None,
        features: Sequence[str] | None = None,
    ):
        if not isinstance(every_n_steps, int) or every_n_steps < 0:
            raise MTIConfigError(
                f"callbacks.atlas_every={every_n_steps!r}; must be an integer >= 0 (0: start "
                "and end only)"
            )
        self.atlas = atlas if isinstance(atlas, AtlasMap) else load_atlas(atlas)
        self.every = every_n_steps
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.features = list(features) if features is not None else None
        self.steps: list[int] = []
        self._vectors: list[torch.Tensor] = []
        self._figures: list[dict[str, torch.Tensor]] = []
        self.result: dict[str, Any] = {}
        self.final: torch.Tensor | None = None

    def state_dict(self) -> dict[str, Any]:
        """The trajectory so far, so a resumed search continues it (saved with checkpoints)."""
        return {
            "steps": list(self.steps),
            "vectors": [v.cpu() for v in self._vectors],
            "figures": [{k: v.cpu() for k, v in f.items()} for f in self._figures],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = list(state["steps"])
        self._vectors, self._figures = list(state["vectors"]), list(state["figures"])

    def vectors(self, lm: LoadedModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """The dataset pass's reduction of ``images`` (any size; resized to the model's input)
        at the atlas layer: summed attribution ``vector``, ``activation``, ``e_plus``,
        ``e_minus``, on the images' device."""
        layer = self.atlas.cfg.atlas_layer
        readout = build_readout(lm.model, lm.input_size, [self.atlas.cfg.spec]).to(images.device)
        with torch.inference_mode(False):
            out = reduce_batch(lm, readout, resize(images, lm.input_size[1:]), [layer])
        return {
            "vector": out[f"{layer}/vector"],
            "activation": out["activation"],
            "e_plus": out[f"{layer}/e_plus"],
            "e_minus": out[f"{layer}/e_minus"],
        }

    def _record(self, trainer: L.Trainer, module: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or step in self.steps:
            return
        with torch.no_grad():
            images = module().detach()
        out = self.vectors(module.lm, images)
        self.steps.append(step)
        self._vectors.append(out.pop("vector"))
        self._figures.append(out)

    def on_train_start(self, trainer: L.Trainer, module: Any) -> None:
        self._record(trainer, module)

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.every and trainer.global_step % self.every == 0:
            self._record(trainer, module)

    def on_fit_end(self, trainer: L.Trainer, module: Any) -> None:
        self._record(trainer, module)

    def on_search_end(
        self, trainer: L.Trainer, module: Any, inversions: dict[str, torch.Tensor] | None
    ) -> None:
        if not trainer.is_global_zero:
            return
        device = self._vectors[-1].device
        n = self._vectors[-1].shape[0]
        groups = {"trajectory": torch.stack([v.cpu() for v in self._vectors])}
        if inversions:
            for sign in ("plus", "minus"):
                part = self.vectors(module.lm, inversions[sign].detach().to(device))
                groups[sign] = part["vector"][None].cpu()
        flat = torch.cat([g.reshape(-1, g.shape[-1]) for g in groups.values()]).cpu()
        placed = iter(self.atlas.place(flat.double().numpy()))
        where = {name: [[next(placed) for _ in range(n)] for _ in g] for name, g in groups.items()}
        figures = {k: torch.stack([f[k].cpu() for f in self._figures]) for k in self._figures[0]}
        with torch.no_grad():
            self.final = module().detach().float().cpu()
        self.result = self._summarise(where, figures)
        if self.out_dir is not None:
            self._write(trainer)

    def _summarise(
        self, where: dict[str, list[list[dict]]], figures: dict[str, torch.Tensor]
    ) -> dict[str, Any]:
        traj = where["trajectory"]
        n = len(traj[0])
        features = self.features or [str(self.atlas.cfg.spec)] * n
        images = []
        for k in range(n):
            end = traj[-1][k]
            e_plus, e_minus = float(figures["e_plus"][-1, k]), float(figures["e_minus"][-1, k])
            images.append(
                {
                    "image": k,
                    "feature": features[k],
                    "activation": float(figures["activation"][-1, k]),
                    "e_plus": e_plus,
                    "e_minus": e_minus,
                    "tension": min(e_plus, e_minus),
                    **end,
                    "trajectory": [
                        {"step": s, "x": traj[i][k]["x"], "y": traj[i][k]["y"]}
                        for i, s in enumerate(self.steps)
                    ],
                    **{
                        sign: {c: where[sign][0][k][c] for c in ("x", "y", "cell", "on_map")}
                        for sign in ("plus", "minus")
                        if sign in where
                    },
                }
            )
        return {
            "atlas_run": str(self.atlas.run_dir),
            "atlas": self.atlas.describe(),
            "embedding_fingerprint": self.atlas.fingerprint,
            "grid": self.atlas.grid,
            "every_n_steps": self.every,
            "steps": list(self.steps),
            "units": {
                "nn_dist": "layout distance to the nearest data image / the layout's median "
                "nearest-neighbour distance",
                "nn_dist_hd": "the same in the attribution space (UMAP metric "
                f"{self.atlas.cfg.umap_metric})",
                "on_map_hd_threshold": self.atlas.on_map_hd,
            },
            "images": images,
        }

    def columns(self) -> list[dict[str, Any]]:
        """Per image, the ``atlas_*`` columns of the search's results rows."""
        out = []
        for rec in self.result.get("images", []):
            row = {f"atlas_{c}": rec[c] for c in COLUMNS}
            row["atlas_cell"] = str(tuple(rec["cell"]))
            for sign in ("plus", "minus"):
                if sign in rec:
                    row[f"atlas_{sign}_cell"] = str(tuple(rec[sign]["cell"]))
            out.append(row)
        return out

    def _write(self, trainer: L.Trainer) -> None:
        out, res, final = self.out_dir, self.result, self.final
        for k, img in enumerate(final):
            save_png(out / f"image_{k:03d}.png", img)
            res["images"][k]["png"] = f"image_{k:03d}.png"
        write_json(out / PLACEMENT, res)
        rows = [
            {"image": r["image"], "feature": r["feature"]} | c
            for r, c in zip(res["images"], self.columns())
        ]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write(out / "placement.csv", lambda tmp: tmp.write_text(buf.getvalue()))
        fig = placement_figure(self.atlas, res, final, out / "placement.png")
        logger = next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        if logger is not None:
            logger.log_image("atlas/placement", [str(fig)], caption=[self.atlas.describe()])


def atlas_callback(
    cfg: MTIConfig,
    run_dir: Path,
    lm: Any,
    specs: Sequence[FeatureSpec],
    layer: str | None,
    features: Sequence[str],
) -> AtlasEmbedding:
    """The callback ``callbacks.atlas=PATH`` asks for, checked against the search's model,
    target and attribution layer (before the search starts); its files go to ``<run>/atlas``."""
    c = cfg.callbacks
    atlas = load_atlas(c.atlas)
    check_search(atlas, cfg.model, specs, layer)
    side = atlas.cfg.input_size
    if side and tuple(lm.input_size[1:]) != (side, side):
        raise MTIConfigError(
            f"callbacks.atlas={atlas.run_dir} was made at input size {side}x{side}, the "
            f"search's model.input_size={list(lm.input_size)}; use model.input_size=[3,{side},{side}]"
        )
    return AtlasEmbedding(atlas, c.atlas_every, Path(run_dir) / "atlas", features)
