"""Loggers of a run: W&B (offline by itself when no API key or server is reachable) or CSV."""

from __future__ import annotations

import netrc
import os
import socket
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from mti_lightning.core.errors import MTIConfigError

LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "online", "offline")
_told = False


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _reachable(host: str = "api.wandb.ai", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wandb_mode(mode: str) -> str:
    """Resolve ``auto`` to online or offline; say once why it is offline."""
    global _told
    if mode not in WANDB_MODES:
        raise MTIConfigError(f"logger.mode {mode!r}; valid: {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode
    if _has_api_key() and _reachable():
        return "online"
    if not _told:
        why = "no W&B API key" if not _has_api_key() else "the W&B server is unreachable"
        print(f"mti: {why}; logging W&B offline (upload later with `wandb sync <run>/wandb`)")
        _told = True
    return "offline"


def make_logger(
    kind: str,
    run_dir: Path,
    name: str | None = None,
    project: str = "mti-lightning",
    group: str | None = None,
    mode: str = "auto",
    tags: list[str] | None = None,
    config: dict[str, Any] | None = None,
) -> WandbLogger | CSVLogger | bool:
    """The Lightning logger for ``kind`` writing under ``run_dir``."""
    if kind not in LOGGERS:
        raise MTIConfigError(f"logger {kind!r}; valid: {', '.join(LOGGERS)}")
    if kind == "none":
        return False
    if kind == "csv":
        return CSVLogger(save_dir=str(run_dir), name="csv", version="")
    os.environ.setdefault("WANDB_SILENT", "true")
    offline = wandb_mode(mode) == "offline"
    logger = WandbLogger(
        save_dir=str(run_dir),
        name=name,
        project=project,
        group=group,
        offline=offline,
        tags=tags,
        settings={"console": "off", "silent": True},
    )
    if config is not None:
        logger.log_hyperparams(config)
    return logger


def logger_from_config(cfg: dict[str, Any], run_dir: Path) -> WandbLogger | CSVLogger | bool:
    """The logger that ``cfg['logger']`` describes, named after the run directory unless a
    name is set, with the whole config as its hyperparameters."""
    lg = cfg["logger"]
    return make_logger(
        lg["kind"],
        run_dir,
        name=lg.get("name") or run_dir.name,
        project=lg["project"],
        group=lg.get("group"),
        mode=lg["mode"],
        config=cfg,
    )
