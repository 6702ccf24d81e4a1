"""A real Dask cluster for the tests: ``dask scheduler`` and ``dask worker`` started as
separate processes on loopback, as users start them (random ports: ``--port 0`` and a
scheduler file in a temporary folder). Every process started here is stopped by pid.

Workers run without a nanny, so ``kill -9`` of one is the loss of a worker (a nanny would
restart it), and with ``allowed-failures = 1`` the scheduler retries a task lost with its
worker once. ``hidden=`` starts a worker in a mount namespace of its own where a tmpfs
covers a folder: it really cannot see the projects under it (root and ``unshare`` needed).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from corekit import stop_process, wait_for

REPO = Path(__file__).resolve().parents[2]
DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


def cluster_env() -> dict[str, str]:
    """This interpreter's environment, with this checkout first on ``sys.path`` (the
    scheduler unpickles the task, the workers import ``thotd`` to run it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES"] = "1"
    env["DASK_DISTRIBUTED__WORKER__DAEMON"] = "False"
    env.pop("THOTD_SOCKET", None)
    return env


class Cluster:
    """One scheduler and its workers, each a process of its own."""

    def __init__(self, base: Path | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="thotd-dask-", dir=base))
        self.env = cluster_env()
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.port = 0
        self.address = ""

    def _spawn(self, argv: list[str], name: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        out = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the process holds it
        try:
            return subprocess.Popen(argv, env=env or self.env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, cwd=self.dir)
        finally:
            out.close()

    def start_scheduler(self) -> str:
        """Start the scheduler (again on the same port after the first time)."""
        sched_file = self.dir / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        self.scheduler = self._spawn(
            [*DASK, "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard",
             "--scheduler-file", str(sched_file)], "scheduler")
        wait_for(lambda: sched_file.exists() and sched_file.stat().st_size > 0 or
                 self.scheduler.poll() is not None, 60, "the scheduler file")
        assert self.scheduler.poll() is None, self.log("scheduler")
        info = json.loads(sched_file.read_text())
        self.address = info["address"]
        self.port = int(self.address.rsplit(":", 1)[1])
        return self.address

    def start_worker(self, name: str, *, nthreads: int = 2, hidden: Path | None = None,
                     resources: str | None = None, wait: bool = True) -> None:
        argv = [*WORKER, self.address, "--name", name, "--nthreads", str(nthreads),
                "--no-nanny", "--no-dashboard", "--local-directory", str(self.dir / name)]
        if resources:
            argv += ["--resources", resources]
        if hidden is not None:
            inner = " ".join(subprocess.list2cmdline([a]) for a in argv)
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    f"mount -t tmpfs none {subprocess.list2cmdline([str(hidden)])} && exec {inner}"]
        self.workers[name] = self._spawn(argv, name)
        if wait:
            wait_for(lambda: name in self.worker_names() or self.workers[name].poll() is not None,
                     60, f"worker {name} to join")
            assert self.workers[name].poll() is None, self.log(name)

    def worker_names(self) -> set[str]:
        """Names of the workers the scheduler knows (asked with a short-lived client)."""
        from distributed import Client

        with contextlib.suppress(Exception), Client(self.address, timeout=5) as c:
            return {w["name"] for w in c.scheduler_info()["workers"].values()}
        return set()

    def log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    def stop_worker(self, name: str) -> None:
        proc = self.workers.pop(name, None)
        if proc is not None:
            stop_process(proc)

    def stop_scheduler(self) -> None:
        if self.scheduler is not None:
            stop_process(self.scheduler)
            self.scheduler = None

    def close(self) -> None:
        for name in list(self.workers):
            self.stop_worker(name)
        self.stop_scheduler()
        shutil.rmtree(self.dir, ignore_errors=True)
