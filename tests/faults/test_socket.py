"""4. The socket: garbage, oversized and half-sent requests, many clients, clients that never
read, a client of another uid. Each gets an error or a refusal; memory stays bounded; the
daemon does not crash; and the owner's requests keep working throughout (a prober times a
raw ``status`` call every 100 ms and samples the daemon's resident memory).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._faults import (
    Daemon,
    Prober,
    Report,
    Row,
    RpcFailure,
    make_gs,
    pick,
    proc_memory,
    rpc,
    wait_for,
)

STANDARD = {-32700, -32600, -32601, -32602, -32001, -32002}
NOBODY = 65534


def _connect(path: Path, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(path))
    return s


def _replies(s: socket.socket, want: int, limit: int = 1 << 26) -> list[dict[str, Any]]:
    """Read ``want`` reply lines (fewer if the server closes)."""
    buf = b""
    out: list[dict[str, Any]] = []
    while len(out) < want:
        try:
            chunk = s.recv(1 << 16)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf and len(out) < want:
            line, buf = buf.split(b"\n", 1)
            out.append(json.loads(line))
        if len(buf) > limit:
            break
    return out


def _rss_mib(fd: Daemon) -> float:
    return proc_memory(fd.pid)["VmRSS"] / 1024


def _garbage(rng: random.Random, n: int) -> list[bytes]:
    fixed = [
        b"\xff\xfe\xfd", b"\x00\x00\x00", b"[" * 60_000, b'{"a":' * 12_000, b"nul\x00l",
        b'{"jsonrpc": "2.0", "id": 1, "method": "status", "params": [1, 2]}',
        b'{"jsonrpc": "2.0", "id": {"x": 1}, "method": "status"}',
        b'{"jsonrpc": "1.0", "id": 1, "method": "status"}',
        b'{"jsonrpc": "2.0", "id": 1, "method": 42}',
        b'{"jsonrpc": "2.0", "id": 1, "method": "no.such.method"}',
        b'[{"jsonrpc": "2.0", "id": 1, "method": "status"}]',
        b'"just a string"', b"1e999999", b"NaN", b'{"jsonrpc": "2.0", "id": 1e400, "method": "x"}',
        "{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"\udcff\"}".encode("utf-8", "surrogatepass"),
    ]
    out = list(fixed)
    while len(out) < n:
        size = rng.choice([1, 7, 64, 512, 4096, 65536])
        blob = bytes(rng.randrange(256) for _ in range(size)).replace(b"\n", b"")
        if blob.strip():
            out.append(blob)
    return out[:n]


class Abuse:
    """One daemon serving one project, abused phase by phase; each phase is a report row."""

    def __init__(self, fd: Daemon, project: Path, reliability: Report) -> None:
        self.fd = fd
        self.project = project
        self.reliability = reliability
        self.methods = sorted(set(fd.rpc("hello")["methods"]) - {"stop", "subscribe", "wait"})
        self.rng = random.Random(7)
        self.problems: list[str] = []
        self.base_rss = _rss_mib(fd)

    def phase(self, title: str) -> tuple[Row, Prober]:
        row = self.reliability.row(title)
        prober = Prober(self.fd.socket, interval=0.1, timeout=10, pid=self.fd.pid)
        return row, prober

    def close(self, row: Row, prober: Prober, tries: int, lost: int, note: str) -> None:
        prober.stop()
        row.tries, row.lost = tries, lost
        row.worst(prober)
        row.notes = (f"{note}; daemon RSS peak {prober.rss_max_kib / 1024:.0f} MiB "
                     f"(start {self.base_rss:.0f})")
        if prober.failures:
            row.lost += 1
            self.problems.append(f"{row.fault}: status failed {prober.failures[:2]}")
        if lost:
            self.problems.append(f"{row.fault}: {lost} lost; {note}")
        assert self.fd.alive(), self.fd.output()[-3000:]


def _garbage_requests(ab: Abuse) -> None:
    """Garbage lines, each on a fresh connection, then fifty on one connection."""
    fd, problems, rng, phase, close = ab.fd, ab.problems, ab.rng, ab.phase, ab.close
    lines = _garbage(rng, pick(300, 3000))
    row, prober = phase(f"garbage requests ({len(lines)} lines: random bytes, invalid UTF-8, "
                        "60k-deep nesting (under the 64 KiB line limit), bad JSON-RPC)")
    with prober:
        lost = 0
        codes: dict[int, int] = {}
        for i, line in enumerate(lines):
            with _connect(fd.socket) as s:
                s.sendall(line + b"\n")
                got = _replies(s, 1)
            if len(got) != 1 or "error" not in got[0] or got[0]["error"]["code"] not in STANDARD:
                lost += 1
                problems.append(f"garbage line {i} ({line[:40]!r}): {got}")
            else:
                codes[got[0]["error"]["code"]] = codes.get(got[0]["error"]["code"], 0) + 1
        # The same garbage on one connection, then a good request on it.
        with _connect(fd.socket) as s:
            s.sendall(b"".join(x + b"\n" for x in lines[:50]))
            s.sendall(b'{"jsonrpc": "2.0", "id": "after", "method": "hello"}\n')
            got = _replies(s, 51)
            if not any(r.get("id") == "after" and "result" in r for r in got):
                lost += 1
                problems.append("a good request after garbage on the same connection went unanswered")
    close(row, prober, len(lines) + 1, lost,
          "each answered with a JSON-RPC error (" + ", ".join(f"{c}×{n}" for c, n in sorted(codes.items()))
          + "); a good request after 50 bad ones on one connection answered")


def _random_params(ab: Abuse) -> None:
    """Every method with random parameters (hypothesis)."""
    fd, methods, phase, close = ab.fd, ab.methods, ab.phase, ab.close
    examples = pick(150, 1500)
    row, prober = phase(f"random parameters to every method (hypothesis, {examples} examples)")
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=False) | st.text(max_size=30),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )
    params_st = st.dictionaries(
        st.sampled_from(["path", "project", "start", "kind", "search", "limit", "id", "timeout",
                         "format", "x"]), json_values, max_size=4)
    seen: dict[str, int] = {}
    bad: list[str] = []

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(method=st.sampled_from(methods), params=params_st)
    def fuzz(method: str, params: dict[str, Any]) -> None:
        if method in ("pause", "resume", "remove", "add", "reload") and "path" not in params:
            params["path"] = "/nonexistent/thotd-fuzz"  # never change the real project
        with _connect(fd.socket, timeout=30) as s:
            s.sendall(json.dumps({"jsonrpc": "2.0", "id": 9, "method": method,
                                  "params": params}).encode() + b"\n")
            got = _replies(s, 1)
        kind = "result" if got and "result" in got[0] else (
            str(got[0]["error"]["code"]) if got and "error" in got[0] else "none")
        seen[kind] = seen.get(kind, 0) + 1
        if kind not in ("result", *map(str, STANDARD)):
            bad.append(f"{method} {json.dumps(params)[:200]} -> {got[:1]}")

    with prober:
        fuzz()
    close(row, prober, examples, len(bad),
          "every call answered: " + ", ".join(f"{k}×{v}" for k, v in sorted(seen.items()))
          + (f"; unexpected: {bad[:3]}" if bad else ""))
    fd.rpc("resume", {})


def _big_requests(ab: Abuse) -> None:
    """10 MB requests."""
    fd, problems, phase, close = ab.fd, ab.problems, ab.phase, ab.close
    big = pick(3, 20)
    row, prober = phase(f"10 MB request line ({big} at once) and 10 MB without a newline")
    with prober:
        lost = 0
        blob = b'{"jsonrpc": "2.0", "id": 1, "method": "status", "params": {"x": "' + b"y" * (10 << 20) + b'"}}\n'

        def send_big(out: list[Any], newline: bool) -> None:
            try:
                with _connect(fd.socket, timeout=60) as s:
                    # The server may cut us off mid-send, after its error reply.
                    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                        s.sendall(blob if newline else blob[:-1])
                    out.append(_replies(s, 1))
            except OSError as exc:
                out.append(exc)

        results: list[Any] = []
        threads = [threading.Thread(target=send_big, args=(results, i % 2 == 0)) for i in range(big + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for got in results:
            if not (isinstance(got, list) and got and got[0].get("error", {}).get("code") == -32600):
                lost += 1
                problems.append(f"10 MB request: {str(got)[:200]}")
        ok = rpc(fd.socket, "hello")
    close(row, prober, len(results), lost + (not ok),
          "each refused with -32600 'request line longer than 1048576 bytes' and cut off")


def _half_requests(ab: Abuse) -> None:
    """Half a request, then silence."""
    fd, phase, close = ab.fd, ab.phase, ab.close
    silent_n = pick(100, 200)
    row, prober = phase(f"half a request then silence ({silent_n} clients)")
    with prober:
        silent = []
        for _ in range(silent_n):
            s = _connect(fd.socket)
            s.sendall(b'{"jsonrpc": "2.0", "id": 1, "meth')
            silent.append(s)
        t0 = time.monotonic()
        answers = [rpc(fd.socket, "status") for _ in range(20)]
        owner_s = time.monotonic() - t0
        for s in silent:
            s.close()
    close(row, prober, silent_n, 0 if len(answers) == 20 else 1,
          f"each holds only its own connection; the owner's 20 status calls took {owner_s:.2f} s "
          "meanwhile (connection limit 256; beyond it a client gets -32002 'too many')")


def _connection_limit(ab: Abuse) -> None:
    """The connection limit."""
    fd, problems, phase, close = ab.fd, ab.problems, ab.phase, ab.close
    row, prober = phase("connection limit: 300 idle clients")
    owner_while_full = ""

    def fill() -> int:
        """Hold 300 idle connections; how many were refused at once with -32002."""
        nonlocal owner_while_full
        idle = [_connect(fd.socket) for _ in range(300)]
        refused = 0
        pending = set(idle)
        deadline = time.monotonic() + 1.0  # a refusal comes at once; the rest stay silent
        while pending and time.monotonic() < deadline:
            readable, _, _ = select.select(list(pending), [], [], 0.1)
            for s in readable:
                pending.discard(s)
                got = _replies(s, 1)
                refused += bool(got and got[0].get("error", {}).get("code") == -32002)
        try:
            owner_while_full = "answered" if rpc(fd.socket, "status") else "?"
        except RpcFailure as exc:
            owner_while_full = f"refused with {exc.code}"
        for s in idle:
            s.close()
        return refused

    with prober:
        # Connections of the phases before may still be closing, and the prober holds one
        # now and then: retry until the count settles at the limit.
        counts: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts.append(fill())
            if 44 <= counts[-1] <= 46:
                break
        refused = counts[-1]
        if not 44 <= refused <= 46:
            problems.append(f"connection limit: refusals {counts}, expected 44")
        after = wait_for(lambda: rpc(fd.socket, "status"), 10, "the owner served again")
    held = [f for f in prober.failures if "-32002" in f]
    prober.failures[:] = [f for f in prober.failures if "-32002" not in f]
    close(row, prober, 300, 0 if after else 1,
          f"{refused} refused at once with -32002 'too many connections' (limit 256), memory "
          f"bounded; while they held the limit the owner was {owner_while_full} too "
          f"({len(held)} probes refused; only processes of the owner's uid get this far), "
          "and served again once they left")


def _many_clients(ab: Abuse) -> None:
    """100 clients at once."""
    fd, project, phase, close = ab.fd, ab.project, ab.phase, ab.close
    clients = 100
    row, prober = phase(f"{clients} clients at once (hello + status + query each)")
    with prober:
        barrier = threading.Barrier(clients)
        outcome: list[Any] = []

        def client() -> None:
            try:
                barrier.wait(30)
                t = time.perf_counter()
                rpc(fd.socket, "hello", timeout=30)
                rpc(fd.socket, "status", timeout=30)
                rpc(fd.socket, "query", {"project": str(project), "start": str(project),
                                         "kind": "asset", "search": {"type": "raw"}}, timeout=30)
                outcome.append(time.perf_counter() - t)
            except Exception as exc:  # noqa: BLE001 - any failure is a loss, reported
                outcome.append(exc)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    failed = [o for o in outcome if not isinstance(o, float)]
    times = sorted(o for o in outcome if isinstance(o, float))
    close(row, prober, clients, len(failed),
          f"all answered; slowest client's 3 calls {max(times, default=0) * 1000:.0f} ms, "
          f"median {times[len(times) // 2] * 1000 if times else 0:.0f} ms")


def _flood(ab: Abuse) -> None:
    """A client that floods and never reads."""
    fd, phase, close = ab.fd, ab.phase, ab.close
    flood = pick(5000, 50000)
    row, prober = phase(f"client sends {flood:,} requests and never reads the replies")
    with prober:
        hog = _connect(fd.socket)
        hog.setblocking(False)
        req = b'{"jsonrpc": "2.0", "id": 1, "method": "status"}\n'
        sent = pushed_back = 0
        deadline = time.monotonic() + 20
        while sent < flood and time.monotonic() < deadline:
            try:
                sent += hog.send(req * 50) // len(req)
            except BlockingIOError:
                pushed_back += 1  # the daemon stopped reading us: back-pressure
                time.sleep(0.01)
        answers = [rpc(fd.socket, "status") for _ in range(10)]
        hog.close()
    close(row, prober, 1, 0 if len(answers) == 10 else 1,
          f"{sent:,} requests written, the client held back {pushed_back} times by a full "
          "socket (32 requests in flight per connection, replies wait on the client); "
          "the owner was served")


def _deaf_subscriber(ab: Abuse) -> None:
    """A subscriber that never reads."""
    fd, project, phase, close = ab.fd, ab.project, ab.phase, ab.close
    row, prober = phase("subscriber that never reads while events pour out")
    with prober:
        sub = _connect(fd.socket)
        sub.sendall(b'{"jsonrpc": "2.0", "id": 1, "method": "subscribe"}\n')
        before = len(fd.runs())
        for _ in range(pick(3, 10)):
            fd.rpc("rerun", {"path": str(project)})
            fd.wait_quiet(120)
        ran = len(fd.runs()) - before
        sub.close()
    close(row, prober, ran, 0, f"{ran} runs' events sent to a subscriber that never reads: "
          "its queue is bounded (1,000 events, then dropped) and a write that waits 30 s drops it")


def _other_uid(ab: Abuse) -> None:
    """Another uid."""
    fd, problems, phase, close = ab.fd, ab.problems, ab.phase, ab.close
    row, prober = phase("client of another uid (nobody, via setpriv)")
    code = (
        "import json, socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        "except OSError as e:\n"
        "    print(json.dumps({'connect': e.strerror})); sys.exit(0)\n"
        "try:  # the daemon may refuse and close before we even send\n"
        "    s.sendall(b'{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"status\"}\\n')\n"
        "except (BrokenPipeError, ConnectionResetError):\n"
        "    pass\n"
        "data = b''\n"
        "while not data.endswith(b'\\n'):\n"
        "    try:\n"
        "        chunk = s.recv(65536)\n"
        "    except ConnectionResetError:\n"
        "        break\n"
        "    if not chunk: break\n"
        "    data += chunk\n"
        "print(json.dumps({'reply': json.loads(data) if data else None}))\n"
    )

    def as_nobody() -> dict[str, Any]:
        res = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-I", "-c", code, str(fd.socket)],
            capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    runtime = fd.socket.parent
    with prober:
        lost = 0
        first = as_nobody()  # the socket as installed: 0600 in a 0700 folder
        if "connect" not in first:
            lost += 1
            problems.append(f"nobody reached the socket through its folder: {first}")
        os.chmod(runtime, 0o711)  # now let the file system through: SO_PEERCRED must refuse
        os.chmod(fd.socket, 0o666)
        try:
            second = as_nobody()
        finally:
            os.chmod(fd.socket, 0o600)
            os.chmod(runtime, 0o700)
        reply = second.get("reply") or {}
        if reply.get("error", {}).get("code") != -32001 or "result" in reply:
            lost += 1
            problems.append(f"nobody was not refused by the uid check: {second}")
        owner = rpc(fd.socket, "status")
    close(row, prober, 2, lost + (not owner),
          f"as installed: connect() fails ({first.get('connect')}); with the modes opened on "
          f"purpose: refused by the peer-uid check ({reply.get('error', {}).get('message', '')[:90]})")


#: The phases in the order they run: each leaves the daemon serving for the next.
PHASES = [_garbage_requests, _random_params, _big_requests, _half_requests, _connection_limit,
          _many_clients, _flood, _deaf_subscriber]


def test_socket_abuse(fd: Daemon, tmp_path: Path, reliability: Report) -> None:
    project = make_gs(tmp_path / "work", 1, 2)
    fd.start()
    fd.add(project)
    ab = Abuse(fd, project, reliability)
    for phase in PHASES:
        phase(ab)
    assert not ab.problems, "\n".join(ab.problems[:20])
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run a client as another uid")
    _other_uid(ab)
    wait_for(fd.alive, 5, "the daemon alive")
    assert not ab.problems, "\n".join(ab.problems[:20])
