"""Loggers of a run: W&B (offline by itself when no API key or server is reachable) or CSV.

The W&B server is ``WANDB_BASE_URL`` when set (a self-hosted server), else W&B's cloud; the
online/offline decision probes that server only, and reads the netrc entry of that server.
A W&B run waits at most :data:`FINISH_TIMEOUT_S` seconds for its uploads when it finishes (and
when the process exits), so a dead server cannot hold a job; what did not reach the server
stays in the run's local copy for ``wandb sync``.
"""

from __future__ import annotations

import netrc
import os
import socket
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lightning.pytorch.loggers import CSVLogger, WandbLogger

from mti_lightning.core.config_schema import MTIConfig
from mti_lightning.core.errors import MTIConfigError

LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "online", "offline")
DEFAULT_SERVER = "https://api.wandb.ai"
# W&B's finish_timeout: how long finishing a run (run.finish(), or W&B's teardown at exit) waits
# for uploads before it gives up on the server; finish_timeout_raises makes run.finish() say so
FINISH_TIMEOUT_S = 20.0
_told = False


@dataclass(frozen=True)
class Server:
    """Where W&B would log online: ``WANDB_BASE_URL`` (a self-hosted server) or W&B's cloud.

    ``machine`` is the netrc entry wandb itself reads and writes for the server (the URL's
    ``host[:port]``); ``host``/``port`` are what the reachability probe connects to.
    """

    url: str
    machine: str
    host: str
    port: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Server:
        env = os.environ if env is None else env
        url = env.get("WANDB_BASE_URL") or DEFAULT_SERVER
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if not parts.hostname:
            raise MTIConfigError(
                f"WANDB_BASE_URL={url!r} names no host; give e.g. http://wandb.mylab.org:8080"
            )
        port = parts.port or (80 if parts.scheme == "http" else 443)
        return cls(url.rstrip("/"), parts.netloc, parts.hostname, port)


def _netrc_path(env: Mapping[str, str]) -> Path:
    """The netrc file wandb reads: ``NETRC`` when set, else ``~/.netrc``."""
    return Path(env.get("NETRC") or "~/.netrc").expanduser()


def has_api_key(server: Server, env: Mapping[str, str] | None = None) -> bool:
    """``WANDB_API_KEY``, or a netrc entry with a password for this server's machine."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    try:
        entries = netrc.netrc(str(_netrc_path(env)))
    except (OSError, netrc.NetrcParseError):
        return False
    for machine in dict.fromkeys((server.machine, server.host)):
        found = entries.authenticators(machine)
        if found and found[2]:
            return True
    return False


def reachable(host: str, port: int, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host:port`` opens within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def decide_mode(mode: str, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(online|offline|disabled, why)`` for ``logger.mode``: an explicit mode wins; ``auto``
    follows ``WANDB_MODE`` when set, else goes online only with an API key for the server
    (``WANDB_BASE_URL`` or W&B's cloud) and that server answering. Only the configured server
    is probed, and only when a key for it is there."""
    if mode not in WANDB_MODES:
        raise MTIConfigError(f"logger.mode {mode!r}; valid: {', '.join(WANDB_MODES)}")
    if mode != "auto":
        return mode, f"logger.mode={mode}"
    env = os.environ if env is None else env
    forced = (env.get("WANDB_MODE") or "").strip().lower()
    if forced in ("offline", "dryrun"):
        return "offline", f"WANDB_MODE={forced}"
    if forced in ("online", "disabled"):
        return forced, f"WANDB_MODE={forced}"
    server = Server.from_env(env)
    if not has_api_key(server, env):
        return "offline", f"no W&B API key for {server.machine} (WANDB_API_KEY or netrc)"
    if not reachable(server.host, server.port):
        return "offline", f"the W&B server {server.url} is unreachable"
    return "online", f"API key for {server.machine} and the server answers"


def wandb_mode(mode: str, run_dir: Path | None = None) -> str:
    """Resolve ``mode`` (see :func:`decide_mode`); say once per process why it is offline and
    how to upload the run later."""
    global _told
    resolved, why = decide_mode(mode)
    if resolved == "offline" and not _told:
        where = Path(run_dir) / "wandb" if run_dir is not None else Path("<run>") / "wandb"
        print(
            f"mti: {why}; logging W&B offline (upload later with "
            f"`wandb sync {where}/offline-run-*`)"
        )
        _told = True
    return resolved


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
    offline = wandb_mode(mode, run_dir) == "offline"
    logger = WandbLogger(
        save_dir=str(run_dir),
        name=name,
        project=project,
        group=group,
        offline=offline,
        tags=tags,
        settings={
            "console": "off",
            "silent": True,
            "finish_timeout": FINISH_TIMEOUT_S,
            "finish_timeout_raises": True,
        },
    )
    # Lightning passes anonymous=None to wandb.init, which wandb answers with a deprecation
    # warning on every run; the setting is gone from wandb, so it is not passed at all
    logger._wandb_init.pop("anonymous", None)
    if config is not None:
        logger.log_hyperparams(config)
    return logger


def logger_from_config(cfg: MTIConfig, run_dir: Path) -> WandbLogger | CSVLogger | bool:
    """The logger that ``cfg.logger`` describes, named after the run directory unless a name
    is set, with the whole config as its hyperparameters."""
    lg = cfg.logger
    return make_logger(
        lg.kind,
        run_dir,
        name=lg.name or run_dir.name,
        project=lg.project,
        group=lg.group,
        mode=lg.mode,
        config=asdict(cfg),
    )
