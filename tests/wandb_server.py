"""A W&B-compatible server for the tests: ``openwandb serve`` (FastAPI + SQLite, the extra
``wandb-server``; a test-only dependency, licence CC-BY-NC-4.0) on 127.0.0.1 at a free port,
its data in a temporary directory, started as a child of the test process and stopped by its
pid. What the server holds is read back over its HTTP API (runs with config and summary,
history keys, artifacts) and from its data directory (the run files the client uploaded:
``files/ENTITY/PROJECT/RUN/...``). ``wandb.Api()`` does not work against it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

API_KEY = "local" + "0" * 40  # openwandb's built-in key of its default user
ENTITY = "default"
# straight to the loopback server: urlopen's shared opener keeps the proxies of the first
# call in the process (a test that sets a refusing proxy would leave it behind)
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
START_S = 180.0  # a quiet machine answers in ~3 s; a loaded 2-core one took ~60 s


class ServerError(RuntimeError):
    """The server could not start; the message holds the end of its log."""


def installed() -> bool:
    """Whether ``openwandb`` is importable (``pip install ".[wandb-server]"``)."""
    try:
        import openwandb  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class WandbServer:
    """One ``openwandb serve`` process; ``start`` again after ``stop`` restarts it on the same
    port and data (a server that comes back)."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data(self) -> Path:
        return self.root / "data"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a client of this server (the process's own, with the W&B
        server, key and no mode forced)."""
        env = dict(os.environ) | {"WANDB_BASE_URL": self.url, "WANDB_API_KEY": API_KEY} | extra
        env.pop("WANDB_MODE", None)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return env

    def start(self) -> WandbServer:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the child holds it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openwandb", "serve", "--host", "127.0.0.1"]
            + ["--port", str(self.port), "--data-dir", str(self.data), "--log-level", "info"],
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("WANDB_")},
        )
        log.close()
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"openwandb exited with {self.proc.returncode}: {self.tail()}")
            try:
                self.get("/api/v1/viewer")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.3)
        self.stop()
        raise ServerError(f"openwandb did not answer within {START_S:.0f} s: {self.tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """End the server's process by its pid (``sig``, then SIGKILL) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def tail(self, chars: int = 3000) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-chars:] if path.is_file() else ""

    def get(self, path: str) -> Any:
        request = urllib.request.Request(self.url + path, headers={"X-Wandb-Api-Key": API_KEY})
        with DIRECT.open(request, timeout=10) as response:
            return json.loads(response.read())

    def runs(self, project: str = "mti-lightning") -> dict[str, dict[str, Any]]:
        """The project's runs by id: ``config`` (values as W&B stores them: ``{"value": x}``),
        ``summary``, ``state``, ``display_name``."""
        found = self.get(f"/api/v2/projects/{ENTITY}/{project}/runs?limit=1000")["runs"]
        return {r["run_id"]: r for r in found}

    def history_keys(self, run_id: str) -> set[str]:
        return set(self.get(f"/api/v2/runs/{run_id}/metrics")["keys"])

    def artifacts(self, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/v2/runs/{run_id}/artifacts")["artifacts"]

    def run_files(self, run_id: str, project: str = "mti-lightning") -> Path:
        """The folder of the files the client uploaded for the run."""
        return self.data / "files" / ENTITY / project / run_id
