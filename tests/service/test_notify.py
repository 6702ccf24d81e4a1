"""sd_notify against a real AF_UNIX datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from thotd.service import notify


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket at a filesystem path, exported as NOTIFY_SOCKET."""
    directory = Path(tempfile.mkdtemp(prefix="thd-n-", dir="/tmp"))
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)


def fields(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    assert data.endswith("\n")
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_with_status(listener: socket.socket) -> None:
    assert notify.ready("watching 2 projects")
    assert fields(listener) == {"READY": "1", "STATUS": "watching 2 projects"}


def test_helpers(listener: socket.socket) -> None:
    assert notify.ready()
    assert fields(listener) == {"READY": "1"}
    assert notify.status("3 runs in flight")
    assert fields(listener) == {"STATUS": "3 runs in flight"}
    assert notify.stopping()
    assert fields(listener) == {"STOPPING": "1"}
    assert notify.watchdog_ping()
    assert fields(listener) == {"WATCHDOG": "1"}
    assert notify.extend_timeout(2.5)
    assert fields(listener) == {"EXTEND_TIMEOUT_USEC": "2500000"}


def test_reloading_carries_monotonic_usec(listener: socket.socket) -> None:
    before = time.monotonic_ns() // 1000
    assert notify.reloading()
    got = fields(listener)
    after = time.monotonic_ns() // 1000
    assert got["RELOADING"] == "1"
    assert before <= int(got["MONOTONIC_USEC"]) <= after


def test_values_cannot_inject_lines(listener: socket.socket) -> None:
    notify.status("line one\nREADY=1")
    assert fields(listener) == {"STATUS": "line one READY=1"}


def test_abstract_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"thotd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert notify.notify(READY=1, STATUS="abstract")
        assert fields(sock) == {"READY": "1", "STATUS": "abstract"}
    finally:
        sock.close()


def test_unset_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready("x") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert notify.watchdog_ping() is False


@pytest.mark.parametrize(
    "value", ["/nonexistent/dir/notify", "@no-such-abstract-socket-thotd", "vsock:2:3"]
)
def test_never_raises(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    assert notify.ready("x") is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert notify.watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))  # meant for our parent
    assert notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    for bad in ("0", "-5", "soon", ""):
        monkeypatch.setenv("WATCHDOG_USEC", bad)
        assert notify.watchdog_interval() is None
