"""The in-process daemon of every test folder (uvicorn's ``run_server`` shape); the root
``conftest`` registers its fixtures.

:func:`running_daemon` starts a real :class:`~thotd.service.daemon.Daemon` on the test's
event loop, with its state, socket and lock in temporary folders, waits until it is ready
and stops it through its exit handler (:meth:`Daemon.handle_signal`), so the whole
lifecycle runs, shutdown included. Tests call the control methods as plain functions on
it; the socket is real too, and daemon-run scripts query the index through it.

A test that needs a ``thotd`` process (signals from outside, ``kill -9``, systemd) uses
the subprocess harness of ``tests/daemon`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from thotd.service.config import Config
from thotd.service.daemon import Daemon
from thotd.service.methods import handlers

T = TypeVar("T")
READY_TIMEOUT_S = 60.0


def small_config(**sections: dict[str, Any]) -> Config:
    """A config for tests: short settle, two workers, no fork server or page unless asked for."""
    data: dict[str, Any] = {"daemon": {"settle_ms": 50, "shutdown_grace_s": 5.0},
                            "pool": {"workers": 2, "fork": False},
                            "web": {"enabled": False}}  # as daemonkit: no page unless asked
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Config.model_validate(data)


@contextlib.asynccontextmanager
async def running_daemon(home: Path, run_dir: Path, config: Config | None = None,
                         daemon: Daemon | None = None) -> AsyncIterator[Daemon]:
    """Serve a daemon on the running loop for the ``async with`` block, then stop it."""
    d = daemon or Daemon(config or small_config(), store_path=home / "state" / "state.sqlite3",
                         socket_path=run_dir / "thotd.sock", lock_path=run_dir / "thotd.lock",
                         methods=handlers)
    d.store_path.parent.mkdir(parents=True, exist_ok=True)
    task = asyncio.create_task(d.run())
    ready = asyncio.create_task(d.ready.wait())
    await asyncio.wait({task, ready}, timeout=READY_TIMEOUT_S,
                       return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        ready.cancel()
        await task  # start-up failed: its exception is the test's failure
        raise AssertionError("the daemon stopped during start-up")
    # The socket answers before the projects load (thotd.service.loading); a test body
    # starts with its configured projects loaded, as a person waiting for `thotctl wait`.
    await asyncio.wait_for(d.until_loaded(), READY_TIMEOUT_S)
    try:
        yield d
    finally:
        d.handle_signal(signal.SIGTERM)
        await asyncio.wait_for(task, READY_TIMEOUT_S)


async def wait_quiet(d: Daemon, timeout: float = 60.0) -> None:
    """Until the daemon is quiet (the ``wait`` method's rule); fail at the deadline."""
    from thotd.service.methods import wait

    result = await wait(d, {"timeout": timeout})
    assert result == {"quiet": True}, f"not quiet after {timeout}s: {d.status_line()}"


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A short private folder for the socket and the lock (sun_path is 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="thd-", dir="/tmp"))
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def in_daemon(tmp_path: Path, run_dir: Path,
              monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``in_daemon(body, config=None, projects=())``: run ``await body(daemon)`` against a
    daemon serving in this process, with ``projects`` registered; return its result."""
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)

    def run(body: Callable[[Daemon], Awaitable[T]], *, config: Config | None = None,
            projects: tuple[Path, ...] = ()) -> T:
        config = config or small_config()
        if projects:
            config = config.model_copy(update={"projects": list(projects)})

        async def main() -> T:
            async with running_daemon(tmp_path, run_dir, config) as d:
                return await body(d)

        return asyncio.run(main())

    return run


async def call(d: Daemon, method: str, params: dict[str, Any] | None = None) -> Any:
    """One JSON-RPC call on the daemon's real socket, from the daemon's own loop."""
    reader, writer = await asyncio.open_unix_connection(os.fspath(d.socket_path), limit=1 << 26)
    try:
        req = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}}
        writer.write(json.dumps(req).encode() + b"\n")
        await writer.drain()
        reply = json.loads(await reader.readline())
    finally:
        writer.close()
        await writer.wait_closed()
    assert "error" not in reply, reply
    return reply["result"]
