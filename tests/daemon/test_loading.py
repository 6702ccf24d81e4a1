"""The daemon answers while it loads (issue 12, goal 2): a real ``thotd`` process whose
loading thread is held by the ``THOTD_TEST_SLOW_LOAD_S`` hook (see
:mod:`thotd.service.loading` for why a hook and not a big tree). While it loads, ``status``
says so with its progress, a file change and a control call are kept and applied after, and
a ``kill -9`` in the middle leaves a state the next start recovers from."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from corekit import add_sample, derived_assets, oracle, wait_for
from daemonkit import Daemon

from thotd.service.loading import SLOW_LOAD_VAR

HOLD_S = 4.0


def db_check(path: Path) -> dict[str, Any]:
    """The state database as the next daemon opens it: integrity, runs left 'running'."""
    db = sqlite3.connect(path, timeout=30)
    try:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        running = db.execute("SELECT container FROM runs WHERE status = 'running'").fetchall()
    finally:
        db.close()
    return {"integrity": integrity, "running": running}


def _first_run(daemon: Daemon, gs: Path) -> None:
    daemon.start()
    daemon.add(gs)
    assert len(daemon.runs()) == 7


def _restart_slow(daemon: Daemon, hold: float = HOLD_S) -> None:
    daemon.env[SLOW_LOAD_VAR] = str(hold)
    try:
        daemon.start()  # returns as soon as the socket answers
    finally:
        daemon.env.pop(SLOW_LOAD_VAR)


def _loading(daemon: Daemon, gs: Path) -> dict[str, Any] | None:
    return daemon.project(gs)["loading"]


def _same_as_a_fresh_run(gs: Path) -> None:
    assert derived_assets(gs) == oracle(gs.parent, gs.name, gs.parent.parent / "oracle")


def test_status_says_loading_then_a_change_made_meanwhile_runs_after(daemon: Daemon, gs: Path) -> None:
    _first_run(daemon, gs)
    daemon.stop()
    _restart_slow(daemon)
    st = daemon.status()
    assert st["loading"] is True and st["quiet"] is False
    loading = _loading(daemon, gs)
    assert loading is not None and "phase" in loading and "objects" in loading
    during = set(daemon.project(gs))  # the keys a --json reader meets while it loads
    text = daemon.ctl("status")
    assert "loading: " in text.stdout, text.stdout
    # A new sample while the project loads: its events are kept, applied once it is loaded.
    add_sample(gs, "group-1", "sample-007")
    assert _loading(daemon, gs) is not None, "the load ended before the change: hold longer"
    daemon.wait_quiet()  # waits through the loading
    assert _loading(daemon, gs) is None
    assert during == set(daemon.project(gs))  # the same keys loaded or not
    new = {(os.path.basename(r["container"]), os.path.basename(r["script"]))
           for r in daemon.runs() if r["started"] and r["trigger"] != "rerun"}
    assert ("sample-007", "sample.py") in new
    _same_as_a_fresh_run(gs)


def test_a_control_call_during_loading_is_answered_after_it(daemon: Daemon, gs: Path) -> None:
    _first_run(daemon, gs)
    daemon.stop()
    _restart_slow(daemon)
    sample = gs / "group-0" / "sample-000"
    answer: dict[str, Any] = {}
    asker = threading.Thread(target=lambda: answer.update(daemon.rpc("rerun", {"path": str(sample)})))
    asker.start()
    wait_for(lambda: _loading(daemon, gs) is not None, 10, "status to answer during the call")
    assert asker.is_alive(), "rerun answered before the project was loaded"
    asker.join(60)
    assert answer["queued"] == [{"container": str(sample), "script": str(gs.parent / "analysis" / "sample.py")}]
    daemon.wait_quiet()
    reruns = [r for r in daemon.runs() if r["trigger"] == "rerun"]
    assert [os.path.basename(r["container"]) for r in reruns] == ["sample-000"]


def test_kill9_during_loading_then_restart_is_clean(daemon: Daemon, gs: Path) -> None:
    _first_run(daemon, gs)
    daemon.stop()
    (gs / "group-0" / "sample-001" / "raw" / "data.csv").write_text("value\n5\n6\n7\n")
    _restart_slow(daemon, hold=30)
    assert _loading(daemon, gs) is not None
    daemon.kill9()
    db = db_check(daemon.state)
    assert db["integrity"] == "ok" and not db["running"]
    daemon.start()
    daemon.wait_quiet()
    st = daemon.project(gs)
    assert st["loading"] is None and not st["error"]
    assert not db_check(daemon.state)["running"]
    _same_as_a_fresh_run(gs)
