"""Run logs are kept within limits (issue 11, item 11): the newest few per run, a total cap,
never a log in use. Real files, and real runs through the one-shot runner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from corekit import make_tree, run_json

from thotd.engine import logretention
from thotd.engine.logretention import Retention, prune, prune_run, prune_total
from thotd.engine.oneshot import run_project
from thotd.engine.staleness import Engine
from thotd.engine.state import Store
from thotd.project.index import Index


def write_logs(folder: Path, stamps: list[str], size: int = 100) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for stamp in stamps:
        path = folder / f"{stamp}.log"
        path.write_bytes(b"x" * size)
        out.append(path)
    return out


STAMPS = [f"20260101T0000{n:02d}.000" for n in range(6)]


def test_a_run_keeps_its_newest_logs(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "runs" / "a-1", STAMPS)
    (tmp_path / "runs" / "a-1" / f"{STAMPS[0]}.log.record").write_text("{}")  # beside it
    deleted = prune_run(tmp_path / "runs" / "a-1", 2, in_use=set())
    assert sorted(deleted) == [str(p) for p in logs[:4]]
    assert sorted(p.name for p in (tmp_path / "runs" / "a-1").iterdir()) == [
        f"{STAMPS[4]}.log", f"{STAMPS[5]}.log"]


def test_logs_in_use_are_never_deleted(tmp_path: Path) -> None:
    logs = write_logs(tmp_path / "runs" / "a-1", STAMPS)
    in_use = {str(logs[1])}  # say, the log a run in another process still writes
    prune_run(tmp_path / "runs" / "a-1", 1, in_use)
    assert sorted(p for p in (tmp_path / "runs" / "a-1").iterdir()) == [logs[1], logs[5]]
    prune_total(tmp_path / "runs", 0, in_use)
    assert list((tmp_path / "runs" / "a-1").iterdir()) == [logs[1]]


def test_the_total_is_cut_oldest_first_across_runs(tmp_path: Path) -> None:
    a = write_logs(tmp_path / "runs" / "a-1", STAMPS[0::2])  # 0, 2, 4
    b = write_logs(tmp_path / "runs" / "b-2", STAMPS[1::2])  # 1, 3, 5
    c = write_logs(tmp_path / "runs" / "c-3", ["20250101T000000.000"])  # oldest: its folder goes
    deleted = prune_total(tmp_path / "runs", 350, in_use=set())
    assert deleted == {str(c[0]): 100, str(a[0]): 100, str(b[0]): 100, str(a[1]): 100}
    assert not (tmp_path / "runs" / "c-3").exists()
    left = sorted(p.name for p in (tmp_path / "runs").rglob("*.log"))
    assert left == [f"{STAMPS[n]}.log" for n in (3, 4, 5)]


def test_prune_applies_both_limits_and_keeps_count_of_the_total(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    logretention._totals.pop(str(root), None)
    write_logs(root / "a-1", STAMPS[:3])
    newest = write_logs(root / "b-2", STAMPS[3:])
    limits = Retention(keep_per_run=2, max_total_bytes=250)
    deleted = prune(root, str(newest[-1]), limits, in_use={str(newest[-1])})
    # b keeps 2 of 3; then the total (2 in a after nothing, 3 + 2 = 500 bytes) is cut to 200.
    assert str(newest[0]) in deleted
    assert sum(p.stat().st_size for p in root.rglob("*.log")) <= 250
    assert newest[-1].exists()
    assert logretention._totals[str(root)].bytes <= 250


def project(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": [{"script": "chatty.py"}],
        "chatty.py": "print('x' * 5000)\n",
        "sub": {"_container.json": {}, "_scripts.json": [{"script": "../chatty.py"}]},
    })


def test_reruns_keep_the_newest_logs_of_each_run_and_the_last_one(tmp_path: Path) -> None:
    """Seven reruns, three logs kept per run; the log the last history row names is there."""
    root = project(tmp_path)
    store = Store(tmp_path / "state" / "state.sqlite3")
    engine = Engine(Index.load(str(root)), store)
    engine.retention = Retention(keep_per_run=3)
    for _ in range(7):
        report = run_project(engine)
        assert [o.status for o in report.outcomes] == ["ok", "ok"]
    folders = sorted((tmp_path / "state" / "runs").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert len(list(folder.glob("*.log"))) == 3
    for row in store.history(limit=2):
        assert os.path.exists(row["log"]), row
    assert len(store.history(limit=100)) == 14
    store.close()


def test_a_total_cap_below_one_log_keeps_the_last_ones(tmp_path: Path) -> None:
    """However small the cap, each run's last log stays: it is in use."""
    root = project(tmp_path)
    store = Store(tmp_path / "state" / "state.sqlite3")
    engine = Engine(Index.load(str(root)), store)
    engine.retention = Retention(keep_per_run=5, max_total_bytes=1)
    for _ in range(3):
        run_project(engine)
    logs = sorted((tmp_path / "state" / "runs").rglob("*.log"))
    assert sorted(map(str, logs)) == sorted(store.logs_in_use())
    assert len(logs) == 2
    store.close()


def test_after_the_first_walk_the_kept_total_triggers_the_next(tmp_path: Path) -> None:
    """No walk while the kept total is under the cap; over it, one that cuts to 90 %."""
    root = tmp_path / "runs"
    logretention._totals.pop(str(root), None)
    limits = Retention(keep_per_run=100, max_total_bytes=1000)
    first = write_logs(root / "a-1", STAMPS[:1])
    assert prune(root, str(first[0]), limits, in_use=set()) == []
    stray = write_logs(root / "x-9", ["20240101T000000.000"], size=50)  # unseen: no walk
    more = write_logs(root / "a-1", STAMPS[1:5], size=250)
    for log in more[:-1]:
        assert prune(root, str(log), limits, in_use={str(log)}) == []
    assert stray[0].exists()
    # Kept: 100 + 4 * 250 = 1100 > 1000; really 1150 (the stray), cut oldest first to 900.
    deleted = prune(root, str(more[-1]), limits, in_use={str(more[-1])})
    assert deleted == [str(stray[0]), str(first[0]), str(more[0])]
    assert sum(p.stat().st_size for p in root.rglob("*.log")) == 750


def test_thot_run_keeps_as_many_logs_as_thotds_config_says(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = project(tmp_path)
    config = tmp_path / "config.toml"
    config.write_text("[run_logs]\nkeep_per_run = 1\n")
    monkeypatch.setenv("THOTD_CONFIG", str(config))
    state = tmp_path / "state" / "state.sqlite3"
    for _ in range(3):
        code, report = run_json(state, root)
        assert code == 0, report
    logs = sorted((tmp_path / "state" / "runs").rglob("*.log"))
    assert [str(p) for p in logs] == sorted(o["log"] for o in report["runs"])


def test_a_log_outside_the_runs_folder_prunes_nothing_there(tmp_path: Path) -> None:
    """Only the run folders under the log root are ever pruned."""
    mine = write_logs(tmp_path / "elsewhere", STAMPS)
    (tmp_path / "runs").mkdir()
    prune(tmp_path / "runs", str(mine[-1]), Retention(keep_per_run=1), in_use=set())
    assert all(p.exists() for p in mine)
