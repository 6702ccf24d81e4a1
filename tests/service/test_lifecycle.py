"""The daemon's lifecycle, in process: ``startup()``, serve, ``shutdown()`` always.

A failure after start-up (or half-way through it) must still close what was opened: the
watcher's threads, the state database, the fork server, the socket file and the lock.
Signal handlers are the daemon's only while it serves.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from pathlib import Path

import pytest
from inprocess import running_daemon, small_config

from thotd.service.control import acquire_lock
from thotd.service.daemon import Daemon
from thotd.service.methods import handlers


def _daemon(tmp_path: Path, run_dir: Path, **sections: dict[str, object]) -> Daemon:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    return Daemon(small_config(**sections), store_path=state / "state.sqlite3",
                  socket_path=run_dir / "thotd.sock", lock_path=run_dir / "thotd.lock",
                  methods=handlers)


def _assert_released(d: Daemon, run_dir: Path) -> None:
    assert not d.watcher.healthy()  # closed: its observer threads are stopped
    with pytest.raises(sqlite3.ProgrammingError):
        d.store.projects()  # the database is closed
    assert d.forks.server is None
    assert not (run_dir / "thotd.sock").exists()
    os.close(acquire_lock(run_dir / "thotd.lock"))  # the lock is free again


def test_a_failure_after_startup_still_closes_everything(
        tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _daemon(tmp_path, run_dir, pool={"fork": True})
    seen: dict[str, object] = {}

    async def broken_main_loop() -> None:
        seen["forkserver"] = d.forks.server
        raise RuntimeError("injected after start-up")

    monkeypatch.setattr(d, "main_loop", broken_main_loop)
    with pytest.raises(RuntimeError, match="injected"):
        asyncio.run(d.run())
    server = seen["forkserver"]
    assert server is not None and server.gone()  # type: ignore[attr-defined]
    _assert_released(d, run_dir)


def test_a_failure_during_startup_closes_what_was_opened(tmp_path: Path, run_dir: Path) -> None:
    (run_dir / "thotd.sock").write_text("not a socket")  # the socket cannot be bound
    d = _daemon(tmp_path, run_dir)
    with pytest.raises(FileExistsError):
        asyncio.run(d.run())
    assert (run_dir / "thotd.sock").read_text() == "not a socket"  # not ours: left alone
    (run_dir / "thotd.sock").unlink()
    _assert_released(d, run_dir)


def test_signal_handlers_are_restored_after_the_daemon(tmp_path: Path, run_dir: Path) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    async def main() -> None:
        async with running_daemon(tmp_path, run_dir) as d:
            assert d.ready.is_set()

    asyncio.run(main())
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_sighup_reloads_from_the_main_loop(tmp_path: Path, run_dir: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text("[daemon]\nsettle_ms = 50\n")
    d = Daemon(small_config(), store_path=tmp_path / "state.sqlite3",
               socket_path=run_dir / "thotd.sock", lock_path=run_dir / "thotd.lock",
               methods=handlers, config_path=config_file)

    async def main() -> float:
        async with running_daemon(tmp_path, run_dir, daemon=d):
            config_file.write_text("[daemon]\nsettle_ms = 70\n")
            os.kill(os.getpid(), signal.SIGHUP)  # a real signal, through the loop's handler
            deadline = asyncio.get_running_loop().time() + 10
            while d.config.daemon.settle_ms != 70:
                assert asyncio.get_running_loop().time() < deadline, "no reload after SIGHUP"
                await asyncio.sleep(0.01)
            return d.watcher.settle_s

    assert asyncio.run(main()) == pytest.approx(0.07)


def test_sigterm_stops_the_daemon(tmp_path: Path, run_dir: Path) -> None:
    d = _daemon(tmp_path, run_dir)

    async def main() -> int:
        task = asyncio.create_task(d.run())
        await asyncio.wait_for(d.ready.wait(), 60)
        os.kill(os.getpid(), signal.SIGTERM)
        return await asyncio.wait_for(task, 60)

    assert asyncio.run(main()) == 0
    _assert_released(d, run_dir)


def test_a_failed_reload_leaves_the_daemon_serving(
        tmp_path: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = _daemon(tmp_path, run_dir)
    calls: list[int] = []

    async def broken_reload() -> dict[str, object]:
        calls.append(1)
        raise OSError("injected reload failure")

    monkeypatch.setattr(d, "reload", broken_reload)

    async def main() -> None:
        async with running_daemon(tmp_path, run_dir, daemon=d):
            d.handle_signal(signal.SIGHUP)
            while not calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0)  # let the main loop see the failure
            assert not d.stopping and d.watcher.healthy()

    asyncio.run(asyncio.wait_for(main(), 60))
    assert calls == [1]
