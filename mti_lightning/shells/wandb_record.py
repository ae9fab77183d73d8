"""What a run leaves in W&B besides its curves: summary and config, tables whose cells are
images, and the run's outputs as a versioned artifact.

Every function does nothing unless given a ``WandbLogger`` (offline runs included), so callers
pass whatever logger the run has. Callers write their results to the run directory first; the
calls here are guarded: a tracker that fails (a server gone mid-run, a refused request) costs
one warning line and the later calls that need the server, never the run. Summary and config
still go into the run's local copy under ``<run>/wandb``, which ``wandb sync`` uploads later;
finishing waits at most ``loggers.FINISH_TIMEOUT_S`` for the server.
"""

from __future__ import annotations

import json
import os
import re
import sys
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from lightning.pytorch.loggers import WandbLogger
from PIL import Image

from mti_lightning.core.io import to_uint8
from mti_lightning.shells.loggers import reachable


def as_wandb(logger: Any) -> WandbLogger | None:
    """``logger`` when it is a ``WandbLogger`` (or the first one of a list), else None."""
    loggers = logger if isinstance(logger, (list, tuple)) else [logger]
    return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)


PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")
# loggers whose tracker failed: their later calls are skipped (the warning was said once)
_failed: weakref.WeakSet[WandbLogger] = weakref.WeakSet()


def sync_command(wb: WandbLogger) -> str:
    """The command that uploads the run's local copy (``<run>/wandb/run-...`` or
    ``offline-run-...``) later; an online run's copy needs ``--no-skip-online``."""
    try:
        run = wb.experiment
        local = Path(run.dir).parent
        flag = "" if run.offline else "--no-skip-online "
    except Exception:  # noqa: BLE001 (no run was started: name the folder runs go to)
        local, flag = Path(wb.save_dir or ".") / "wandb", ""
    return f"wandb sync {flag}{local}"


def _warn(wb: WandbLogger, what: str, err: BaseException) -> None:
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    print(
        f"mti: W&B: {what} failed ({type(err).__name__}: {reason}); the run is kept in "
        f"{Path(wb.save_dir or '.') / 'wandb'}, upload it with `{sync_command(wb)}`",
        file=sys.stderr,
        flush=True,
    )


class ServerGone(ConnectionError):
    """The W&B server of an online run no longer answers."""


def _check_server(wb: WandbLogger) -> None:
    """Raise :class:`ServerGone` when ``wb`` logs online and its server does not take a TCP
    connection: W&B's calls that need the server (tables, artifacts) would each wait on it."""
    run = wb.experiment
    if run.offline or any(os.environ.get(v) for v in PROXY_VARIABLES):
        return  # offline, or a proxy stands between: only W&B itself can tell
    url = run.settings.base_url
    parts = urlsplit(url)
    port = parts.port or (80 if parts.scheme == "http" else 443)
    if parts.hostname and not reachable(parts.hostname, port):
        raise ServerGone(f"the W&B server {url} does not answer")


def guarded(
    logger: Any, what: str, call: Callable[[WandbLogger], Any], needs_server: bool = True
) -> bool:
    """Run ``call(wandb_logger)`` unless the run has no W&B logger. A call that
    ``needs_server`` (tables and artifacts: W&B checks them with its server) is skipped once
    the run's tracker failed, and an online run's server is probed before it; a call that only
    records into the run (summary, config) is always made. On any error say once what failed
    and how to upload the run later. Returns whether the call ran to its end."""
    wb = as_wandb(logger)
    if wb is None or (needs_server and wb in _failed):
        return False
    try:
        if needs_server:
            _check_server(wb)
        call(wb)
    except Exception as err:  # noqa: BLE001 (any tracker failure; the results are on disk)
        if wb not in _failed:
            _warn(wb, what, err)
        _failed.add(wb)
        return False
    return True


def finish_run(logger: Any) -> None:
    """Finish the W&B run: its uploads get the bounded wait of :data:`loggers.FINISH_TIMEOUT_S`
    (then W&B gives up and the local copy keeps the rest for ``wandb sync``). Finishing is tried
    even after a failed call, so the local copy is closed properly; a failure is said once."""
    wb = as_wandb(logger)
    if wb is None:
        return
    try:
        wb.experiment.finish()
    except Exception as err:  # noqa: BLE001 (TimeoutError: the bounded wait ran out)
        if wb not in _failed:
            what = "uploading at the end" if isinstance(err, TimeoutError) else "finishing"
            _warn(wb, what, err)
        _failed.add(wb)


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

    def send(wb: WandbLogger) -> None:
        wb.experiment.config.update(dict(config), allow_val_change=True)
        wb.experiment.summary.update(dict(summary))

    guarded(logger, "the summary", send, needs_server=False)


def log_table(
    logger: Any, key: str, rows: Sequence[Mapping[str, Any]], images: Mapping[str, Sequence[Any]]
) -> None:
    """The W&B table ``key``: one row per entry of ``rows`` (columns: their keys) and one
    image column per entry of ``images`` (a tensor, a PNG path, or None per row)."""
    if as_wandb(logger) is None or not rows:
        return
    columns = list(rows[0])
    clash = [c for c in images if c in columns]
    if clash:
        raise ValueError(f"image columns {clash} clash with the table's columns")

    def send(wb: WandbLogger) -> None:
        data = [
            [r.get(c) for c in columns]
            + [None if col[i] is None else image_cell(col[i]) for col in images.values()]
            for i, r in enumerate(rows)
        ]
        wb.log_table(key=key, columns=[*columns, *images], data=data)

    guarded(logger, f"the table {key!r}", send)


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
    ``config.json`` when the run directory holds no ``config.yaml``. Returns what it added
    (nothing when the tracker failed)."""
    if as_wandb(logger) is None:
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
    logged = guarded(
        logger, f"the artifact {artifact.name!r}", lambda wb: wb.experiment.log_artifact(artifact)
    )
    return added if logged else []


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
    :func:`run_label`), with the run's ``config`` record (``dataclasses.asdict`` of the
    typed config), and finish the W&B run (see :func:`finish_run`); nothing for other
    loggers. Call it once the run directory holds everything the run found."""
    if as_wandb(logger) is None:
        return
    log_outputs(logger, run_dir, f"{kind}-{run_label(run_dir)}", kind, paths, config, metadata)
    finish_run(logger)
