"""The one daemon harness. Where a real ``thotd`` process is the point (signals, crashes,
start-up, the CLI): :class:`Daemon`, started with its own XDG folders, config and socket, a
raw JSON-RPC client for its socket, and the process readings the fault suite takes (memory,
scripts a killed daemon left behind). Where it is not, tests use the in-process daemon of
``tests/inprocess.py`` (fixture ``in_daemon``): the daemon object on the test's own loop.

A module with a unique name at the top of ``tests/`` (on ``sys.path`` through the root
``conftest``), so every test folder imports the same one: ``from daemonkit import Daemon``.
Conditions are polled with deadlines (:func:`corekit.wait_for`), never slept on.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from corekit import THOT_VARS, wait_for

__all__ = [
    "TAG_VAR", "Daemon", "RpcFailure", "make_daemon", "proc_memory",
    "rpc", "tagged_processes",
]

T = TypeVar("T")

#: Inherited by every script a test's daemon starts, so the test can find (and end) the
#: scripts that outlive a killed daemon.
TAG_VAR = "THOTD_TEST_TAG"

#: Variables of the environment a test may run in that would change what the daemon does.
FOREIGN_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", *THOT_VARS)


# ---------------------------------------------------------------------------- the socket


class RpcFailure(Exception):
    """The daemon answered with a JSON-RPC error."""

    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('message')} (code {error.get('code')})")
        self.error = error
        self.code = error.get("code")


def _read_line(sock: socket.socket, limit: int = 256 * 1024 * 1024) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        if len(buf) > limit:
            raise OSError("response too long")
    return bytes(buf)


def rpc(path: str | os.PathLike[str], method: str, params: dict[str, Any] | None = None,
        timeout: float = 10.0) -> Any:
    """One raw JSON-RPC call on a fresh connection (no thotctl start-up in the timing)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(os.fspath(path))
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        s.sendall(json.dumps(req).encode() + b"\n")
        line = _read_line(s)
    if not line:
        raise ConnectionError(f"no reply to {method}")
    reply = json.loads(line)
    if "error" in reply:
        raise RpcFailure(reply["error"])
    return reply["result"]


# ---------------------------------------------------------------------------- processes


def proc_memory(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak) of a process, in KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0])
    return out


def tagged_processes(tag: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries ``TAG_VAR=tag``:
    scripts started by one test's daemon (they inherit its environment)."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read()
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and stat[stat.rfind(b")") + 2:][:1] not in (b"Z", b"X"):
            found.append(int(name))
    return found



# ---------------------------------------------------------------------------- the daemon


@dataclass
class Daemon:
    """One real ``thotd --foreground`` process with private XDG folders and socket."""

    home: Path
    env: dict[str, str]
    config: Path
    tag: str
    prefix: list[str] = field(default_factory=list)  # e.g. setpriv ... to drop capabilities
    proc: subprocess.Popen[bytes] | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        """``THOTD_SOCKET`` when the harness set one, else where the daemon puts it."""
        if "THOTD_SOCKET" in self.env:
            return Path(self.env["THOTD_SOCKET"])
        return Path(self.env["XDG_RUNTIME_DIR"]) / "thotd" / "thotd.sock"

    @property
    def state_dir(self) -> Path:
        return Path(self.env["XDG_STATE_HOME"]) / "thotd"

    @property
    def state(self) -> Path:
        return self.state_dir / "state.sqlite3"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def configure(self, **sections: dict[str, Any]) -> None:
        """Write the TOML config: ``configure(pool={"workers": 2}, daemon={...})``."""
        base: dict[str, dict[str, Any]] = {
            "daemon": {"settle_ms": 50, "shutdown_grace_s": 2},
            "pool": {"workers": 2},
            # No page unless a test asks for one: test daemons would fight over the default
            # port (and a user's own daemon's), and each would import the web stack.
            "web": {"enabled": False},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        lines = []
        for name, values in base.items():
            lines.append(f"[{name}]")
            for key, value in values.items():
                lines.append(f"{key} = {json.dumps(value)}")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *extra: str, check: bool = True, timeout: float = 60,
              umask: int = -1) -> subprocess.Popen[bytes]:
        """``thotd start --foreground`` (with ``umask`` when given); waits until it answers
        unless ``check`` is false."""
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground",
             *extra],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            umask=umask,
        )
        out.close()
        self.procs.append(self.proc)
        if check:
            self.wait_ready(timeout)
        return self.proc

    def answers(self) -> bool:
        try:
            rpc(self.socket, "hello", timeout=5)
            return True
        except (OSError, ValueError, RpcFailure):
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        assert self.proc is not None
        wait_for(lambda: self.proc.poll() is not None or self.answers(), timeout,
                 "the daemon to answer")
        assert self.proc.poll() is None, self.output()[-4000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        try:
            return (self.home / "daemon.out").read_text(errors="replace")
        except OSError:
            return ""

    def rpc(self, method: str, params: dict[str, Any] | None = None, timeout: float = 60) -> Any:
        return rpc(self.socket, method, params, timeout=timeout)

    def status(self) -> dict[str, Any]:
        return self.rpc("status")

    def project(self, root: Path | str) -> dict[str, Any]:
        root = os.path.normpath(os.path.abspath(root))
        for p in self.status()["projects"]:
            if p["root"] == root:
                return p
        raise AssertionError(f"project {root} not registered")

    def ctl(self, *args: str, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "thotd.cli.thotctl", *args], env={**self.env, **(env or {})},
            capture_output=True, text=True, errors="replace", timeout=timeout,
        )

    def ctl_json(self, *args: str) -> Any:
        """``thotctl ARGS --json``, which must succeed; its parsed output. (``status`` exits 1
        when the project is not healthy, and says so in the JSON: that is an answer too.)"""
        res = self.ctl(*args, "--json")
        unhealthy = args[:1] == ("status",) and res.returncode == 1 and '"healthy": false' in res.stdout
        assert res.returncode == 0 or unhealthy, f"thotctl {args} failed: {res.stderr}\n{self.output()[-3000:]}"
        return json.loads(res.stdout)

    def add(self, project: Path, wait: bool = True, timeout: float = 300) -> None:
        self.rpc("add", {"path": str(project)}, timeout=timeout)
        if wait:
            self.wait_quiet(timeout)

    def wait_quiet(self, timeout: float = 300) -> None:
        res = self.rpc("wait", {"timeout": timeout}, timeout=timeout + 30)
        assert res.get("quiet"), f"not quiet after {timeout}s\n{self.output()[-3000:]}"

    def runs(self, limit: int = 100000) -> list[dict[str, Any]]:
        return self.rpc("runs", {"limit": limit})["runs"]

    def stop(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(30)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(30)
        # Scripts that outlived a killed daemon (their own sessions): end them by pid.
        for pid in tagged_processes(self.tag):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def make_daemon(tmp_path: Path, name: str = "d", **config: dict[str, Any]) -> Iterator[Daemon]:
    """A daemon (not started) with its own runtime dir (short: ``sun_path`` holds 108 bytes),
    state, config and environment; ``config`` overrides sections of the default config. On
    exit its processes, and the scripts they left behind, are killed."""
    run_dir = Path(tempfile.mkdtemp(prefix="thd-", dir="/tmp"))
    os.chmod(run_dir, 0o700)
    home = tmp_path / name
    home.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{run_dir.name}"
    env = {
        **os.environ,
        "XDG_RUNTIME_DIR": str(run_dir),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CONFIG_HOME": str(home / "cfg"),
        "THOTD_SOCKET": str(run_dir / "thotd.sock"),
        "THOTD_CONFIG": str(home / "config.toml"),
        "PYTHONUNBUFFERED": "1",
        TAG_VAR: tag,
    }
    for var in FOREIGN_VARS:
        env.pop(var, None)
    d = Daemon(home, env, home / "config.toml", tag)
    d.configure(**config)
    try:
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(run_dir, ignore_errors=True)
