"""A one-node SLURM cluster for the tests: a config and all daemon state (munge key and
socket, controller state, spool, logs) in one temporary directory; munged, slurmctld and slurmd
started in the foreground as children of the test process and stopped by their pids. Debian's
``slurm-wlm`` and ``munge`` packages provide the programs (``.ci/run`` installs them); nothing
here touches ``/etc`` or any munge or SLURM daemon of the system."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
CPUS = 4  # declared (config_overrides): two 2-task jobs or four 1-task jobs fit at once


class ClusterError(RuntimeError):
    """SLURM could not be installed or started; the message says which step and why."""


def _sbin(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def check_installed() -> None:
    """Fail with the reason when a daemon or client is missing (``.ci/run`` installs them)."""
    missing = [d for d in (*DAEMONS, "sbatch", "squeue") if not _sbin(d)]
    if missing:
        raise ClusterError(
            f"{', '.join(missing)} not found: apt-get install {' '.join(PACKAGES)} (as .ci/run does)"
        )
    if os.geteuid() != 0:
        raise ClusterError("the test cluster's daemons run as root (SlurmUser=root); not root")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(root: Path) -> Path:
    """``slurm.conf`` of one node, its state, spool, logs and munge socket all under ``root``."""
    host = socket.gethostname().split(".")[0]
    for d in ("state", "spool", "log", "munge"):
        (root / d).mkdir(parents=True, exist_ok=True)
    lines = [
        "ClusterName=mtitest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # a requeued job waits cred_expire seconds before it may start again (default 120)
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'},cred_expire=10",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        # no cgroups (containers, CI runners): track processes through /proc, bind nothing
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        "SchedulerType=sched/builtin",
        "SchedulerParameters=sched_interval=2",  # pending jobs (a requeued one) tested often
        "MpiDefault=none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SlurmdParameters=config_overrides",
        "ReturnToService=2",
        "SlurmdTimeout=30",
        "SlurmctldTimeout=30",
        "MinJobAge=10",
        "KillWait=5",
        "InactiveLimit=0",
        "Waittime=0",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={CPUS} RealMemory=8000 State=UNKNOWN",
        "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
    ]
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


@dataclass
class Cluster:
    """A running one-node cluster: its config (``SLURM_CONF`` for clients) and daemons."""

    root: Path
    conf: Path
    host: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """The environment of a SLURM client (sbatch, squeue, submitit) of this cluster."""
        return dict(os.environ, SLURM_CONF=str(self.conf))

    def run(self, *cmd: str, check: bool = True) -> str:
        out = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if check and out.returncode:
            raise ClusterError(f"{' '.join(cmd)}: {out.stderr.strip()}")
        return out.stdout

    def jobs(self) -> list[str]:
        """Ids of the jobs the controller still knows as pending or running."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def wait_idle(self, timeout: float = 120) -> None:
        """Until no job is queued or running."""
        deadline = time.time() + timeout
        while self.jobs():
            if time.time() > deadline:
                raise ClusterError(f"jobs still queued after {timeout:.0f} s: {self.jobs()}")
            time.sleep(0.5)

    def log_tail(self) -> str:
        logs = sorted((self.root / "log").glob("*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in logs)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then end exactly the daemons this object started."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--full", "-u", "root"], env=self.env, capture_output=True)
            try:
                self.wait_idle(30)
            except ClusterError:
                pass
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.procs.clear()


def _start(cluster: Cluster, name: str, cmd: list[str]) -> None:
    log = open(cluster.root / "log" / f"{name}.out", "wb")  # noqa: SIM115 (kept by the Popen)
    cluster.procs[name] = subprocess.Popen(
        cmd, env=cluster.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_for(cluster: Cluster, what: str, ready, timeout: float) -> None:
    deadline = time.time() + timeout
    while not ready():
        dead = [n for n, p in cluster.procs.items() if p.poll() is not None]
        if dead or time.time() > deadline:
            why = f"{', '.join(dead)} exited" if dead else f"not after {timeout:.0f} s"
            raise ClusterError(f"SLURM: waiting for {what}: {why}\n{cluster.log_tail()}")
        time.sleep(0.2)


def start(root: Path, timeout: float = 60) -> Cluster:
    """Write the config under ``root``, start munged, slurmctld and slurmd, and return once
    the node is idle. On any failure the daemons already started are stopped."""
    check_installed()
    conf = write_config(root)
    cluster = Cluster(root, conf, socket.gethostname().split(".")[0])
    munge = root / "munge"
    key = munge / "munge.key"
    key.write_bytes(secrets.token_bytes(128))
    key.chmod(0o400)
    try:
        _start(cluster, "munged", [
            _sbin("munged"), "--foreground", "--force", f"--key-file={key}",
            f"--socket={munge / 'munge.socket'}", f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={root / 'log' / 'munged.log'}", f"--seed-file={munge / 'munged.seed'}",
        ])  # fmt: skip
        _wait_for(cluster, "munged", (munge / "munge.socket").exists, timeout)
        _start(cluster, "slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(conf)])
        _wait_for(cluster, "slurmctld", lambda: _answers(cluster), timeout)
        _start(cluster, "slurmd", [_sbin("slurmd"), "-D", "-N", cluster.host, "-f", str(conf)])
        _wait_for(cluster, "the node to be idle", lambda: _node_idle(cluster), timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _answers(cluster: Cluster) -> bool:
    return subprocess.run(["sinfo", "-h"], env=cluster.env, capture_output=True).returncode == 0


def _node_idle(cluster: Cluster) -> bool:
    out = cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False).split()
    return out == ["idle"]
