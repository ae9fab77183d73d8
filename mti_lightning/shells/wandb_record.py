"""What a run leaves in W&B besides its curves: summary and config, tables whose cells are
images, the run's outputs as a versioned artifact, and one line chart per quantity with a
line per unit.

Every function does nothing unless given a ``WandbLogger`` (offline runs included), so callers
pass whatever logger the run has.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from mti_lightning.core.io import to_uint8


def as_wandb(logger: Any) -> WandbLogger | None:
    """``logger`` when it is a ``WandbLogger`` (or the first one of a list), else None."""
    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


def image_cell(value: torch.Tensor | Path | str | Image.Image, caption: str | None = None) -> Any:
    """A ``wandb.Image`` of an image tensor ``(3|4, H, W)`` in [0, 1] (4: with alpha), a PNG
    file or a PIL image."""
    import wandb

    if isinstance(value, torch.Tensor):
        value = Image.fromarray(to_uint8(value.detach().float().cpu().clamp(0, 1)))
    elif isinstance(value, (str, Path)):
        value = str(value)
    return wandb.Image(value, caption=caption)


def log_summary(logger: Any, summary: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """Put ``summary`` in the run's summary (what a sweep sorts and ranks by) and ``config`` in
    its config (what it groups and plots against)."""
    wb = as_wandb(logger)
    if wb is None:
        return
    wb.experiment.config.update(dict(config), allow_val_change=True)
    wb.experiment.summary.update(dict(summary))


def log_table(
    logger: Any, key: str, rows: Sequence[Mapping[str, Any]], images: Mapping[str, Sequence[Any]]
) -> None:
    """The W&B table ``key``: one row per entry of ``rows`` (columns: their keys) and one
    image column per entry of ``images`` (a tensor, a PNG path, or None per row)."""
    wb = as_wandb(logger)
    if wb is None or not rows:
        return
    columns = list(rows[0])
    clash = [c for c in images if c in columns]
    if clash:
        raise ValueError(f"image columns {clash} clash with the table's columns")
    data = [
        [r.get(c) for c in columns]
        + [None if col[i] is None else image_cell(col[i]) for col in images.values()]
        for i, r in enumerate(rows)
    ]
    wb.log_table(key=key, columns=[*columns, *images], data=data)


def artifact_name(text: str) -> str:
    """``text`` reduced to the characters W&B allows in an artifact's name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "run"


def log_outputs(
    logger: Any,
    run_dir: Path,
    name: str,
    kind: str,
    paths: Iterable[str],
    config: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[str]:
    """Log the files and folders ``paths`` (relative to ``run_dir``; missing ones skipped) as
    a new version of the artifact ``name`` of type ``kind``; ``config`` goes in as
    ``config.json`` when the run directory holds no ``config.yaml``. Returns what it added."""
    wb = as_wandb(logger)
    if wb is None:
        return []
    import wandb

    artifact = wandb.Artifact(artifact_name(name), type=kind, metadata=dict(metadata or {}))
    added = []
    for rel in paths:
        path = Path(run_dir) / rel
        if path.is_dir() and any(path.iterdir()):
            artifact.add_dir(str(path), name=rel)
        elif path.is_file():
            artifact.add_file(str(path), name=rel)
        else:
            continue
        added.append(rel)
    if config is not None and not (Path(run_dir) / "config.yaml").is_file():
        with artifact.new_file("config.json") as f:
            json.dump(config, f, indent=1, default=str)
        added.append("config.json")
    wb.experiment.log_artifact(artifact)
    return added


def run_label(run_dir: Path) -> str:
    """A run directory's last two parts (``2025-01-31/10-00-00``, ``SWEEP/3``) as one name:
    the artifact of a run redone in the same directory gets a new version of the same name."""
    return "-".join(Path(run_dir).resolve().parts[-2:])


def track_outputs(
    logger: Any,
    run_dir: Path,
    kind: str,
    paths: Iterable[str],
    config: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
) -> None:
    """Log a run's outputs ``paths`` as a new version of the artifact ``KIND-RUN`` (see
    :func:`run_label`) and finish the W&B run; nothing for other loggers."""
    wb = as_wandb(logger)
    if wb is None:
        return
    log_outputs(wb, run_dir, f"{kind}-{run_label(run_dir)}", kind, paths, config, metadata)
    wb.experiment.finish()


# the per-unit quantities MTISearch logs (``QUANTITY/UNIT``)
CURVE_QUANTITIES = ("activation", "e_plus", "e_minus", "tension", "tension_ratio", "match")


class UnitCurvePanels(L.Callback):
    """One W&B line chart per quantity (``curves/tension``, ...) with a line per unit.

    W&B draws a section per key prefix (``tension/``) with one panel per key; this adds the
    panel that holds every unit's line. It reads the step's curve values when the loggers
    log them (every ``log_every_n_steps``; the values are then on the host anyway) and logs
    the charts when the search ends. Nothing without a W&B logger.
    """

    def __init__(self, quantities: Sequence[str] = CURVE_QUANTITIES):
        self.quantities = tuple(quantities)
        self.steps: list[int] = []
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        every = trainer.log_every_n_steps
        if as_wandb(trainer.loggers) is None or every < 1 or trainer.global_step % every:
            return
        metrics = trainer.callback_metrics
        picked = {
            k: v for k, v in metrics.items() if k.split("/", 1)[0] in self.quantities and "/" in k
        }
        if not picked:
            return
        self.steps.append(trainer.global_step - 1)  # the step the loggers record
        values = torch.stack([v.detach().float().reshape(()) for v in picked.values()])
        for key, value in zip(picked, values.cpu().tolist()):  # one copy to the host
            quantity, unit = key.split("/", 1)
            self.values[quantity][unit].append(value)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        wb = as_wandb(trainer.loggers)
        if wb is None or not self.steps or not trainer.is_global_zero:
            return
        import wandb

        charts = {}
        for quantity, units in self.values.items():
            names = [u for u, ys in units.items() if len(ys) == len(self.steps)]
            charts[f"curves/{quantity}"] = wandb.plot.line_series(
                xs=self.steps,
                ys=[units[u] for u in names],
                keys=names,
                title=f"{quantity} per unit",
                xname="step",
            )
        wb.experiment.log(charts)
