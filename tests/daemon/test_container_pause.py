"""Pausing one container: a real thotd process, real folders, real ``thotctl``.

The G×S project (``gs``): a sample run per sample, a group run per group (reading its
samples), one summary run at the root (reading the groups). Pausing ``group-1`` holds the
runs of ``group-1`` and its samples; ``group-0``'s chain runs on.
"""

from __future__ import annotations

import os
from pathlib import Path

from corekit import add_sample, wait_for
from daemonkit import Daemon


def _new_runs(daemon: Daemon, gs: Path, before: set[int]) -> list[tuple[str, str]]:
    return sorted((os.path.basename(r["script"]), os.path.relpath(r["container"], gs))
                  for r in daemon.runs() if r["id"] not in before)


def _queued(daemon: Daemon, gs: Path) -> dict[str, bool]:
    """Queued runs as ``container (relative): held``."""
    return {os.path.relpath(q["container"], gs): q["held"] for q in daemon.project(gs)["queued"]}


def test_a_paused_container_holds_its_runs_across_a_restart_until_resumed(
        daemon: Daemon, gs: Path) -> None:
    daemon.start()
    daemon.add(gs)
    group1 = gs / "group-1"
    res = daemon.ctl("pause", str(group1))
    assert res.returncode == 0, res.stderr
    assert f"paused container {group1}" in res.stdout
    before = {r["id"] for r in daemon.runs()}

    data = group1 / "sample-000" / "raw" / "data.csv"
    data.write_text(data.read_text() + "1.0\n")
    wait_for(lambda: _queued(daemon, gs).get("group-1/sample-000"), 30, "sample-000 queued and held")
    add_sample(gs, "group-0", "sample-009", pause=0.02)  # the sibling's new sample
    daemon.wait_quiet()  # quiet: what is left waits for a resume
    assert _new_runs(daemon, gs, before) == [("group.py", "group-0"), ("sample.py", "group-0/sample-009")]
    # the summary reads group-1 too: it waits (queued, not held itself) for the held runs
    assert _queued(daemon, gs) == {"group-1/sample-000": True, ".": False}

    st = daemon.ctl_json("status")["projects"][0]
    assert st["paused"] is False
    assert st["paused_containers"] == [{"container": str(group1), "held": 1, "missing": False}]
    human = daemon.ctl("status").stdout
    assert f"paused container {group1}: 1 run held" in human, human
    assert f"in {group1 / 'sample-000'} [paused]:" in human, human

    # Kept across a restart: the catch-up queues the stale run again, and it stays held.
    assert daemon.stop() == 0
    daemon.start()
    daemon.wait_quiet()
    assert daemon.project(gs)["paused_containers"][0]["container"] == str(group1)
    assert _queued(daemon, gs).get("group-1/sample-000") is True
    assert _new_runs(daemon, gs, before) == [("group.py", "group-0"), ("sample.py", "group-0/sample-009")]

    res = daemon.ctl("resume", str(group1))
    assert res.returncode == 0, res.stderr
    assert f"resumed container {group1}" in res.stdout
    daemon.wait_quiet()
    assert _new_runs(daemon, gs, before) == [
        ("group.py", "group-0"), ("group.py", "group-1"), ("sample.py", "group-0/sample-009"),
        ("sample.py", "group-1/sample-000"), ("summary.py", "."),
    ]
    st = daemon.project(gs)
    assert st["paused_containers"] == [] and st["queued"] == []


def test_pausing_a_container_holds_a_rerun_and_the_containers_under_it(
        daemon: Daemon, gs: Path) -> None:
    daemon.start()
    daemon.add(gs)
    before = {r["id"] for r in daemon.runs()}
    assert daemon.ctl("pause", str(gs / "group-0")).returncode == 0
    assert daemon.ctl("rerun", str(gs / "group-0" / "sample-001")).returncode == 0
    assert daemon.ctl("rerun", str(gs / "group-1" / "sample-001")).returncode == 0
    daemon.wait_quiet()
    assert ("sample.py", "group-1/sample-001") in _new_runs(daemon, gs, before)
    assert _queued(daemon, gs).get("group-0/sample-001") is True
    # resuming the project (not the container) leaves the container paused
    assert daemon.ctl("resume", str(gs)).returncode == 0
    daemon.wait_quiet()
    assert _queued(daemon, gs).get("group-0/sample-001") is True
    # resuming a container above it (here: the paused one) releases the held run
    assert daemon.ctl("resume", str(gs / "group-0")).returncode == 0
    daemon.wait_quiet()
    assert ("sample.py", "group-0/sample-001") in _new_runs(daemon, gs, before)


def test_pause_names_a_path_that_is_no_project_nor_container(
        daemon: Daemon, gs: Path, tmp_path: Path) -> None:
    daemon.start()
    daemon.add(gs)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for verb in ("pause", "resume"):
        res = daemon.ctl(verb, str(outside))
        assert res.returncode != 0
        assert f"{outside} is in no registered project" in res.stderr, res.stderr
    raw = gs / "group-0" / "sample-000" / "raw"  # an asset, not a container
    for target in (raw, gs / "group-0" / "no-such-folder"):
        res = daemon.ctl("pause", str(target))
        assert res.returncode != 0
        assert f"{target} is not a container of project {gs}" in res.stderr, res.stderr
    assert daemon.project(gs)["paused_containers"] == []


def test_a_removed_paused_container_is_kept_and_said_missing_until_resumed(
        daemon: Daemon, gs: Path) -> None:
    import shutil

    daemon.start()
    daemon.add(gs)
    group1 = gs / "group-1"
    assert daemon.ctl("pause", str(group1)).returncode == 0
    shutil.rmtree(group1)
    wait_for(lambda: daemon.project(gs)["paused_containers"][0]["missing"], 30,
             "the paused container said missing")
    daemon.wait_quiet()
    assert "folder gone" in daemon.ctl("status").stdout
    res = daemon.ctl("resume", str(group1))
    assert res.returncode == 0, res.stderr
    assert daemon.project(gs)["paused_containers"] == []
    assert daemon.alive()


def test_paused_containers_survive_a_lost_database_and_an_old_schema(tmp_path: Path) -> None:
    """Mirrored into the projects file (a database moved aside keeps them); a database of
    schema 1 (before container pauses) opens with none paused."""
    import sqlite3

    from thotd.engine import projectfile
    from thotd.engine.state import MIGRATIONS, Store

    db = tmp_path / "state.sqlite3"
    store = Store(db)
    store.add_project("/data/p")
    store.set_paused_containers("/data/p", ["/data/p/b", "/data/p/a"])
    store.close()
    assert projectfile.load(db) == [
        {"root": "/data/p", "paused": False, "paused_containers": ["/data/p/a", "/data/p/b"]}
    ]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = Store(db)  # a fresh database, seeded from the file
    assert store.paused_containers("/data/p") == ["/data/p/a", "/data/p/b"]
    store.close()

    old = tmp_path / "old.sqlite3"
    con = sqlite3.connect(old)
    con.executescript(MIGRATIONS[0] + "PRAGMA user_version=1;")
    con.execute("INSERT INTO projects (root, added, paused) VALUES ('/data/q', 0, 1)")
    con.commit()
    con.close()
    store = Store(old)
    assert store.paused_containers("/data/q") == []
    assert store.projects()[0]["paused"] is True
    store.close()
