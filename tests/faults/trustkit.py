"""Helpers of the trust-boundary cases: other accounts, a tiny project, a real daemon.

Kept apart from the fault suite's shared machinery on purpose: these cases need little
(start ``thotd``, poll its socket, make files of another uid) and must not depend on how
that machinery evolves.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
PRIVATE_GROUP_USER = "thotd-trust-test"


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy; fail naming ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give files to another uid")


def private_group_user() -> pwd.struct_passwd:
    """A real second account with its own private group (``useradd`` makes one if missing)."""
    need_root()
    try:
        return pwd.getpwnam(PRIVATE_GROUP_USER)
    except KeyError:
        pass
    tool = shutil.which("useradd")
    if tool is None:
        pytest.skip("useradd is not installed")
    proc = subprocess.run([tool, "--user-group", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", PRIVATE_GROUP_USER],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a test user: {proc.stderr.strip()}")
    return pwd.getpwnam(PRIVATE_GROUP_USER)


def python_for(uid: int) -> str:
    """An interpreter that ``uid`` may execute (``/root`` is often 0700)."""
    for candidate in (sys.executable, "/usr/bin/python3", shutil.which("python3")):
        if not candidate:
            continue
        try:
            probe = subprocess.run([candidate, "-c", ""], user=uid, group=uid, extra_groups=[],
                                   capture_output=True, timeout=60)
        except PermissionError:
            continue
        if probe.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter executable by uid {uid}")


def shared_tmpdir(prefix: str) -> Path:
    """A folder in ``/tmp`` that every account can reach (pytest's tmp_path is 0700)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def make_project(root: Path, script_body: str = "print('ran')\n") -> Path:
    """A one-container Thot project whose root runs ``analysis.py``; returns the root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "_container.json").write_text(json.dumps({"name": "p"}))
    (root / "_scripts.json").write_text(json.dumps([{"script": "analysis.py"}]))
    (root / "analysis.py").write_text(script_body)
    return root


def rpc(path: Path, method: str, params: dict[str, Any] | None = None,
        timeout: float = 30.0) -> Any:
    """One raw JSON-RPC call (no client library: its checks are under test elsewhere)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        request = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        sock.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    if "error" in reply:
        raise AssertionError(f"{method}: {reply['error']}")
    return reply["result"]


@dataclass
class Daemon:
    """A real ``thotd start --foreground`` with its own XDG folders."""

    base: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return Path(self.env["XDG_RUNTIME_DIR"]) / "thotd" / "thotd.sock"

    @property
    def state_dir(self) -> Path:
        return Path(self.env["XDG_STATE_HOME"]) / "thotd"

    @property
    def config(self) -> Path:
        return Path(self.env["THOTD_CONFIG"])

    def start(self, *, umask: int = 0o022) -> subprocess.Popen[bytes]:
        out = open(self.base / "daemon.out", "ab")  # noqa: SIM115 - as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground"],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            umask=umask,
        )
        out.close()
        return self.proc

    def answers(self) -> bool:
        try:
            rpc(self.socket, "hello", timeout=5)
            return True
        except (OSError, ValueError, AssertionError):
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        proc = self.proc
        assert proc is not None
        wait_for(lambda: proc.poll() is not None or self.answers(), timeout,
                 "the daemon to answer")
        assert proc.poll() is None, self.output()[-4000:]

    def output(self) -> str:
        try:
            return (self.base / "daemon.out").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextlib.contextmanager
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A configured, not yet started daemon; its folders do not exist yet, so the daemon
    creates every one of them itself."""
    base = shared_tmpdir("tht-")  # short: the socket path must fit in sun_path
    os.chmod(base, 0o700)
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(base / "run"),
        "XDG_STATE_HOME": str(base / "state"),
        "XDG_CONFIG_HOME": str(base / "cfg"),
        "THOTD_CONFIG": str(base / "config.toml"),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
    }
    for var in ("THOTD_SOCKET", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID",
                "JOURNAL_STREAM", "THOTD_QUERY_SOCKET"):
        env.pop(var, None)
    (base / "config.toml").write_text("[daemon]\nsettle_ms = 50\n[pool]\nworkers = 1\n")
    d = Daemon(base, env)
    try:
        yield d
    finally:
        if d.proc is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)
