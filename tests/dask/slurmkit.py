"""A single-node Slurm for the tests, started by hand with no systemd: ``munged`` as user
``munge`` (reused when one already runs), then ``slurmctld -D`` and ``slurmd -D`` with a
configuration of their own in a temporary folder (``SLURM_CONF`` points the client
commands at it): ``proctrack/linuxproc``, ``task/none``, accounting off, one node, one
partition, free ports. Everything started here is stopped by pid.

Needs root and Debian's ``slurm-wlm`` and ``munge`` (``.ci/run`` installs them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

from corekit import stop_process, wait_for

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "sinfo")


def missing() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _which(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class Slurm:
    def __init__(self, base: Path) -> None:
        self.dir = base
        self.conf = base / "slurm.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.munged_pid: int | None = None
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _munge(self) -> None:
        run = Path("/run/munge")
        if (run / "munge.socket.2").exists() and subprocess.run(
                ["munge", "-n"], capture_output=True).returncode == 0:
            return  # one already runs: reuse it
        run.mkdir(parents=True, exist_ok=True)
        shutil.chown(run, "munge", "munge")
        os.chmod(run, 0o755)
        subprocess.run(["runuser", "-u", "munge", "--", _which("munged")], check=True)
        pidfile = run / "munged.pid"
        wait_for(pidfile.exists, 10, "munged's pid file")
        self.munged_pid = int(pidfile.read_text().strip())

    def start(self) -> None:
        self._munge()
        host = socket.gethostname()
        for sub in ("state", "spool"):
            (self.dir / sub).mkdir(exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=thotdtest", f"SlurmctldHost={host}", "SlurmUser=root",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}", "AuthType=auth/munge",
            f"StateSaveLocation={self.dir / 'state'}", f"SlurmdSpoolDir={self.dir / 'spool'}",
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}", f"SlurmdPidFile={self.dir / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.dir / 'slurmctld.log'}", f"SlurmdLogFile={self.dir / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "ReturnToService=2",
            "MpiDefault=none",
            f"NodeName={host} CPUs={os.cpu_count() or 1} RealMemory=2000 State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP", "",
        ]))
        for daemon in ("slurmctld", "slurmd"):
            out = open(self.dir / f"{daemon}.out", "ab")  # noqa: SIM115 - the process holds it
            self.procs.append(subprocess.Popen(
                [_which(daemon), "-D", "-f", str(self.conf)], env=self.env, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
            out.close()
        wait_for(self._idle, 60, "the Slurm node to be idle")

    def _idle(self) -> bool:
        done = subprocess.run(["sinfo", "-h", "-o", "%t"], env=self.env, capture_output=True, text=True)
        return done.returncode == 0 and "idle" in done.stdout

    def jobs(self) -> str:
        done = subprocess.run(["squeue", "-h"], env=self.env, capture_output=True, text=True)
        return done.stdout

    def stop(self) -> None:
        subprocess.run(["scancel", "--user", "root"], env=self.env, capture_output=True)
        for proc in reversed(self.procs):
            stop_process(proc, grace_s=20)
        if self.munged_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.munged_pid, signal.SIGTERM)
