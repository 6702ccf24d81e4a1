"""Shared machinery of the fault suite: a real daemon per test, a raw socket client, a
status-latency prober, memory readings and the collector behind ``docs/reliability.md``.

Everything is real: a ``thotd`` process started with its own XDG folders and socket, real
project folders, real scripts, a real Unix socket. Nothing sleeps and hopes: conditions are
polled with deadlines (:func:`wait_for`). The few fixed delays are the *fault itself* (kill
the daemon N ms after a write) or a sampling interval.

Profiles: ``quick`` (the default, bounded for CI) and ``long`` (``THOTD_FAULTS=long``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

from corekit import derived_assets  # noqa: E402 -- one oracle comparison for all suites
from gen import add_sample, make_gs  # noqa: E402

__all__ = [
    "PROFILE", "REPO", "REPORT", "Daemon", "Prober", "Report", "RpcFailure", "add_sample",
    "db_check", "derived_assets", "make_daemon", "make_gs", "oracle", "pick", "proc_memory",
    "rpc", "tagged_processes", "user_files", "wait_for",
]

PROFILE = "long" if os.environ.get("THOTD_FAULTS", "").strip().lower() == "long" else "quick"


def pick(quick: Any, long: Any) -> Any:
    """The value for the active profile."""
    return long if PROFILE == "long" else quick


def wait_for(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.02) -> Any:
    """Poll ``cond`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


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


class Prober:
    """Times a raw ``status`` call every ``interval`` seconds in a thread.

    ``worst_ms`` is the slowest answer; a call that fails while the daemon is supposed to
    be up counts in ``failures`` (with ``allow_down`` the refused connections of a killed
    daemon are expected and only counted in ``down``). ``check`` sees every status result
    (e.g. to assert the pool limit) and its exceptions are kept in ``problems``.
    """

    def __init__(self, sock: str | os.PathLike[str], *, interval: float = 0.1,
                 timeout: float = 10.0, allow_down: bool = False,
                 check: Callable[[dict[str, Any]], None] | None = None,
                 pid: int | None = None) -> None:
        self.sock = os.fspath(sock)
        self.pid = pid  # also sample this process's resident memory (VmRSS) each time
        self.rss_max_kib = 0
        self.interval = interval
        self.timeout = timeout
        self.allow_down = allow_down
        self.check = check
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.problems: list[str] = []
        self.down = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="status-prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.timeout + 5)

    def probe(self) -> dict[str, Any] | None:
        if self.pid is not None:
            with contextlib.suppress(OSError, ValueError):
                self.rss_max_kib = max(self.rss_max_kib, proc_memory(self.pid).get("VmRSS", 0))
        t0 = time.perf_counter()
        try:
            result = rpc(self.sock, "status", timeout=self.timeout)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            if self.allow_down:
                self.down += 1
            else:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            return None
        except (OSError, ValueError, RpcFailure) as exc:
            # A daemon killed on purpose may take a request down with it (no reply).
            if self.allow_down and isinstance(exc, ConnectionError):
                self.down += 1
                return None
            self.failures.append(f"{type(exc).__name__}: {exc}")
            self.latencies.append(time.perf_counter() - t0)
            return None
        self.latencies.append(time.perf_counter() - t0)
        if self.check is not None:
            try:
                self.check(result)
            except AssertionError as exc:
                self.problems.append(str(exc))
        return result

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.probe()
            self._stop.wait(self.interval)

    @property
    def worst_ms(self) -> float:
        return max(self.latencies, default=0.0) * 1000

    @property
    def count(self) -> int:
        return len(self.latencies)


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
    """Live (non-zombie) processes whose environment carries ``THOTD_FAULT_TAG=tag``:
    scripts started by one test's daemon (they inherit its environment)."""
    needle = f"THOTD_FAULT_TAG={tag}".encode()
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


def db_check(path: Path, copy: bool = False) -> dict[str, Any]:
    """Open the state database the way a restarting daemon would and check it fully.

    With ``copy``, a copy of the files as the crash left them (database and WAL) is checked,
    so that the daemon itself still finds and recovers the originals."""
    if copy:
        scratch = Path(tempfile.mkdtemp(prefix="thf-db-"))
        for suffix in ("", "-wal"):
            src = Path(str(path) + suffix)
            if src.exists():
                shutil.copy2(src, scratch / (path.name + suffix))
        try:
            return db_check(scratch / path.name)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    db = sqlite3.connect(path, timeout=30)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        version = db.execute("PRAGMA user_version").fetchone()[0]
        running = db.execute(
            "SELECT container, script FROM runs WHERE status = 'running'").fetchall()
        history = db.execute("SELECT COALESCE(MAX(id), 0) FROM history").fetchone()[0]
    finally:
        db.close()
    return {"integrity": integrity, "version": version, "running": running, "history": history}


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
        return Path(self.env["THOTD_SOCKET"])

    @property
    def state(self) -> Path:
        return Path(self.env["XDG_STATE_HOME"]) / "thotd" / "state.sqlite3"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def configure(self, **sections: dict[str, Any]) -> None:
        """Write the TOML config: ``configure(pool={"workers": 2}, daemon={...})``."""
        base: dict[str, dict[str, Any]] = {
            "daemon": {"settle_ms": 50, "shutdown_grace_s": 2},
            "pool": {"workers": 2},
        }
        for name, values in sections.items():
            base.setdefault(name, {}).update(values)
        lines = []
        for name, values in base.items():
            lines.append(f"[{name}]")
            for key, value in values.items():
                lines.append(f"{key} = {json.dumps(value)}")
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, *extra: str, check: bool = True, timeout: float = 60) -> subprocess.Popen[bytes]:
        out = open(self.home / "daemon.out", "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground",
             *extra],
            env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
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
def make_daemon(tmp_path: Path, name: str = "d") -> Iterator[Daemon]:
    """A daemon with its own runtime dir (short: sun_path), state, config and env."""
    run_dir = Path(tempfile.mkdtemp(prefix="thf-", dir="/tmp"))
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
        "THOTD_FAULT_TAG": tag,
    }
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                "THOT_CONTAINER_ID", "THOT_SCRIPT_ID", "THOT_PROJECT_ROOT", "THOT_RECORD",
                "THOTD_QUERY_SOCKET"):
        env.pop(var, None)
    d = Daemon(home, env, home / "config.toml", tag)
    d.configure()
    try:
        yield d
    finally:
        d.cleanup()
        shutil.rmtree(run_dir, ignore_errors=True)


# ---------------------------------------------------------------------------- data checks


def _is_script_asset(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "_asset.json"), encoding="utf-8") as fh:
            props = json.load(fh)
    except (OSError, ValueError):
        return False
    return isinstance(props, dict) and props.get("creator_type") == "script"


def user_files(root: Path) -> dict[str, str]:
    """Every file a person put under ``root`` (not what scripts made) -> content digest."""
    import hashlib

    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        if _is_script_asset(dirpath):
            dirs[:] = []
            continue
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = hashlib.blake2b(fh.read(), digest_size=16).hexdigest()
    return out


def oracle(work: Path, project_name: str, scratch: Path) -> dict[str, tuple[dict[str, Any], bytes | None]]:
    """The derived assets of a fresh full ``thot run`` on a copy of the user's files."""
    if scratch.exists():
        shutil.rmtree(scratch)

    def skip(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if os.path.isdir(os.path.join(folder, n))
                and _is_script_asset(os.path.join(folder, n))]

    shutil.copytree(work, scratch, ignore=skip)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("THOT_", "THOTD_"))}
    res = subprocess.run(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(scratch / "oracle.sqlite3"), "run",
         "--root", str(scratch / project_name), "-j", "2"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert res.returncode == 0, f"oracle run failed: {res.stdout[-2000:]} {res.stderr[-2000:]}"
    return derived_assets(scratch / project_name)


# ---------------------------------------------------------------------------- the report


@dataclass
class Row:
    fault: str
    tries: int = 0
    lost: int = 0
    worst_ms: float | None = None
    notes: str = ""
    nodeid: str = ""
    outcome: str = "not run"

    def worst(self, *probers: Prober) -> None:
        values = [p.worst_ms for p in probers if p.count]
        if values:
            self.worst_ms = max([self.worst_ms or 0.0, *values])


@dataclass
class Report:
    """Rows collected by the tests; written as a Markdown table at the session's end."""

    rows: list[Row] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    current: str = ""

    def row(self, fault: str) -> Row:
        r = Row(fault, nodeid=self.current)
        self.rows.append(r)
        return r

    def markdown(self, duration_s: float, outcomes: dict[str, str]) -> str:
        for r in self.rows:
            r.outcome = outcomes.get(r.nodeid, r.outcome)
        cpus = os.cpu_count()
        head = [
            "# Reliability: faults, bad input and abuse",
            "",
            "Generated by the fault suite (`python -m pytest tests/faults`; the long profile "
            "with `THOTD_FAULTS=long`). Do not edit by hand: run the suite again.",
            "",
            f"Profile **{PROFILE}**, {time.strftime('%Y-%m-%d %H:%M', time.localtime(self.started))}, "
            f"{cpus} CPUs, Python {sys.version.split()[0]}, suite time {duration_s:.0f} s. "
            "Every row runs against a real `thotd` process, real folders, real scripts and a "
            "real Unix socket.",
            "",
            "*Lost*: data the fault destroyed or corrupted, runs cut off that never ran again, "
            "or requests of the owner that went unanswered; it must be 0. "
            "*Worst status*: the slowest answer to a raw `status` call on the socket, timed "
            "every 100 ms or so while the fault was applied (connection set-up included, "
            "`thotctl` start-up excluded).",
            "",
            "| fault | tries | lost | worst status (ms) | notes |",
            "|---|---:|---:|---:|---|",
        ]
        order = {"test_crash": 1, "test_scripts": 2, "test_disk": 3, "test_fuzz": 3,
                 "test_socket": 4, "test_load": 5}  # the sections

        def section(r: Row) -> int:
            stem = r.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
            return order.get(stem, 9)

        body = []
        for r in sorted(self.rows, key=section):
            worst = "–" if r.worst_ms is None else f"{r.worst_ms:.0f}"
            notes = r.notes.replace("|", "\\|").replace("\n", " ")
            if r.outcome not in ("passed", "not run"):
                notes = f"**{r.outcome.upper()}** {notes}"
            body.append(f"| {r.fault} | {r.tries} | {r.lost} | {worst} | {notes} |")
        tries = sum(r.tries for r in self.rows)
        lost = sum(r.lost for r in self.rows)
        failed = sum(r.outcome not in ("passed", "not run") for r in self.rows)
        foot = ["", f"{len(self.rows)} faults, {tries:,} tries, {lost} lost"
                + (f", {failed} rows from failing tests." if failed else ".")]
        return "\n".join(head + body + foot) + "\n"


REPORT = Report()
