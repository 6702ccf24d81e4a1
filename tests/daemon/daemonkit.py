"""A real ``thotd`` process per test, isolated by its own XDG folders and socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from gen import add_sample, make_gs  # noqa: E402

__all__ = ["add_sample", "make_gs"]


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Daemon:
    home: Path
    env: dict[str, str]
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return Path(self.env["THOTD_SOCKET"])

    def start(self, *extra: str, check: bool = True) -> subprocess.Popen[bytes]:
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground", *extra],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.procs.append(self.proc)
        if check:
            wait_for(lambda: self.ctl("status").returncode == 0 or self.proc.poll() is not None,
                     60, "the daemon to answer")
            assert self.proc.poll() is None, self.output()
        return self.proc

    def output(self) -> str:
        return (self.home / "daemon.out").read_text(errors="replace")

    def ctl(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "thotd.cli.thotctl", *args], env=self.env, capture_output=True,
            text=True, timeout=timeout,
        )

    def ctl_json(self, *args: str) -> Any:
        res = self.ctl(*args, "--json")
        assert res.returncode == 0, f"thotctl {args} failed: {res.stderr}\n{self.output()[-3000:]}"
        return json.loads(res.stdout)

    def wait_quiet(self, timeout: float = 120) -> None:
        res = self.ctl("wait", "--timeout", str(timeout), timeout=timeout + 30)
        assert res.returncode == 0, f"not quiet: {res.stdout} {res.stderr}\n{self.output()[-3000:]}"

    def runs(self) -> list[dict[str, Any]]:
        return self.ctl_json("runs", "-n", "10000")["runs"]

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    # A short runtime dir: the socket path must fit in sun_path (108 bytes).
    run_dir = Path(tempfile.mkdtemp(prefix="thd-", dir="/tmp"))
    os.chmod(run_dir, 0o700)
    config = tmp_path / "config.toml"
    config.write_text("[daemon]\nsettle_ms = 50\nshutdown_grace_s = 5\n[pool]\nworkers = 2\n")
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(run_dir),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "THOTD_SOCKET": str(run_dir / "thotd.sock"),
        "THOTD_CONFIG": str(config),
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM"):
        env.pop(var, None)
    d = Daemon(tmp_path, env, config)
    yield d
    for p in d.procs:
        if p.poll() is None:
            p.kill()
            p.wait(30)
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def gs(tmp_path: Path) -> Path:
    """A 2×2 G×S project: 4 sample runs, 2 group runs, 1 summary run."""
    return make_gs(tmp_path / "work", 2, 2)
