"""Where the W&B server is: the online/offline decision of ``logger.mode=auto`` honours
``WANDB_MODE``, ``WANDB_BASE_URL`` (a self-hosted server, probed alone, with its own netrc
entry) and an explicit mode. Servers here are sockets on 127.0.0.1 only."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mti_lightning.core.errors import MTIConfigError
from mti_lightning.shells import loggers
from mti_lightning.shells.loggers import Server, decide_mode, has_api_key, make_logger


@pytest.fixture
def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def listening_port() -> Iterator[int]:
    """A loopback port with a real listening socket (a stand-in W&B server's TCP port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(4)
        yield s.getsockname()[1]


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every address the decision connects to (the real connection still happens)."""
    seen: list[tuple[str, int]] = []
    real = socket.create_connection

    def spy(address, *args, **kwargs):
        seen.append(tuple(address))
        return real(address, *args, **kwargs)

    monkeypatch.setattr(loggers.socket, "create_connection", spy)
    return seen


def env(tmp_path: Path, **values: str) -> dict[str, str]:
    """An environment with no key, no mode, no server, and an empty netrc of its own."""
    netrc = tmp_path / "netrc"
    netrc.touch()
    return {"HOME": str(tmp_path), "NETRC": str(netrc), **values}


def test_no_key_is_offline_without_probing(tmp_path, probes):
    mode, why = decide_mode("auto", env(tmp_path))
    assert mode == "offline" and "no W&B API key for api.wandb.ai" in why
    assert probes == []


def test_key_and_unreachable_custom_host_is_offline_probing_that_host_only(
    tmp_path, closed_port, probes
):
    e = env(tmp_path, WANDB_API_KEY="k" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{closed_port}")
    mode, why = decide_mode("auto", e)
    assert mode == "offline" and f"127.0.0.1:{closed_port} is unreachable" in why
    assert probes == [("127.0.0.1", closed_port)]


def test_key_and_reachable_custom_host_is_online(tmp_path, listening_port, probes):
    e = env(tmp_path, WANDB_API_KEY="k" * 40, WANDB_BASE_URL=f"http://127.0.0.1:{listening_port}")
    assert decide_mode("auto", e)[0] == "online"
    assert probes == [("127.0.0.1", listening_port)]


def test_wandb_mode_offline_wins_over_key_and_server(tmp_path, listening_port, probes):
    e = env(
        tmp_path,
        WANDB_MODE="offline",
        WANDB_API_KEY="k" * 40,
        WANDB_BASE_URL=f"http://127.0.0.1:{listening_port}",
    )
    assert decide_mode("auto", e) == ("offline", "WANDB_MODE=offline")
    assert probes == []


def test_explicit_logger_mode_wins(tmp_path, probes):
    assert decide_mode("offline", env(tmp_path, WANDB_MODE="online"))[0] == "offline"
    assert probes == []
    with pytest.raises(MTIConfigError, match="logger.mode 'sometimes'; valid: auto, online"):
        decide_mode("sometimes", env(tmp_path))


def test_netrc_entry_of_the_custom_host_is_its_key(tmp_path, listening_port):
    netloc = f"127.0.0.1:{listening_port}"
    e = env(tmp_path, WANDB_BASE_URL=f"http://{netloc}")
    server = Server.from_env(e)
    assert (server.machine, server.host, server.port) == (netloc, "127.0.0.1", listening_port)
    # a key for W&B's cloud is no key for this server
    Path(e["NETRC"]).write_text("machine api.wandb.ai login user password " + "c" * 40 + "\n")
    assert not has_api_key(server, e)
    assert decide_mode("auto", e)[0] == "offline"
    # the entry wandb login writes for this server: machine host:port
    with open(e["NETRC"], "a") as f:
        f.write(f"machine {netloc} login user password {'s' * 40}\n")
    assert has_api_key(server, e)
    assert decide_mode("auto", e)[0] == "online"


def test_bad_base_url_is_a_clear_error(tmp_path):
    with pytest.raises(MTIConfigError, match="WANDB_BASE_URL='http://' names no host"):
        decide_mode("auto", env(tmp_path, WANDB_API_KEY="k" * 40, WANDB_BASE_URL="http://"))


def test_offline_is_said_once_with_the_sync_line(tmp_path, monkeypatch, capsys):
    for key in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "netrc").touch()
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setattr(loggers, "_told", False)
    assert loggers.wandb_mode("auto", tmp_path / "run") == "offline"
    assert loggers.wandb_mode("auto", tmp_path / "run") == "offline"
    out = capsys.readouterr().out
    assert out.count("logging W&B offline") == 1
    assert f"wandb sync {tmp_path / 'run' / 'wandb'}/offline-run-*" in out


def test_a_failing_tracker_call_costs_one_warning_and_the_run_goes_on(
    tmp_path, monkeypatch, capsys
):
    """A real W&B run (offline) whose table is refused: one warning line naming the local copy
    and its sync command; later calls that need the server are skipped, the summary is still
    recorded, and finishing waits at most FINISH_TIMEOUT_S."""
    import wandb
    import wandb_offline

    from mti_lightning.shells.wandb_record import finish_run, guarded, log_summary

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = make_logger("wandb", tmp_path, mode="offline")
    settings = logger.experiment.settings
    assert settings.finish_timeout == loggers.FINISH_TIMEOUT_S and settings.finish_timeout_raises
    ragged = [[1.0, 2.0]]  # two values for one column: wandb.Table refuses it
    assert not guarded(logger, "the table 't'", lambda wb: wb.log_table("t", ["a"], ragged))
    assert not guarded(logger, "the table 'u'", lambda wb: wb.log_table("u", ["a"], [[1.0]]))
    log_summary(logger, {"summary/x": 1.5}, {"run": {"kind": "mti"}})
    finish_run(logger)
    wandb.teardown()  # wandb-core writes the run file on its own: wait until it has closed it
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mti: W&B:")]
    (local,) = tmp_path.glob("wandb/offline-run-*")
    assert len(said) == 1 and said[0].startswith("mti: W&B: the table 't' failed (")
    assert said[0].endswith(
        f"the run is kept in {tmp_path / 'wandb'}, upload it with `wandb sync {local}`"
    )
    assert wandb_offline.summary(tmp_path)["summary/x"] == 1.5
    assert wandb_offline.config(tmp_path)["run"] == {"kind": "mti"}
    assert not [a for a in wandb_offline.artifacts(tmp_path) if a.type == "run_table"]
