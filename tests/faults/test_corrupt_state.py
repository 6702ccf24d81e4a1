"""A damaged state database and out-of-range intervals (issue 11, item 7).

A corrupt ``state.sqlite3`` made ``thotd start`` die with a traceback (exit 1, which
systemd restarts forever); ``reconcile_minutes = inf`` crashed it too and ``1e-7`` made it
spin. Now the database is moved aside with a timestamp and a fresh one starts, keeping the
projects to watch, and every interval is bounded: a configuration error, exit 78.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from thotd.engine import projectfile
from thotd.engine.state import Store

from .trustkit import daemon, make_project, rpc

ASIDE = re.compile(r"state\.sqlite3\.corrupt-\d{8}T\d{6}$")


def filled(db: Path, projects: tuple[str, ...] = ("/data/p1", "/data/p2")) -> Path:
    """A real database with projects and some history, its projects file written as the
    daemon writes it after every change."""
    store = Store(db)
    for root in projects:
        store.add_project(root)
    store.set_paused(projects[-1], True)
    for n in range(300):
        store.finish_run(projects[0], "/c", f"/s{n}.py", status="ok", exit_code=0, started=1.0,
                         finished=2.0, log=None, reasons=["x" * 200], record={"n": n})
    store.close()
    return db


def truncate(db: Path) -> None:
    with open(db, "r+b") as fh:
        fh.truncate(100)


def random_bytes(db: Path) -> None:
    size = db.stat().st_size
    db.write_bytes(os.urandom(size))


def bad_page(db: Path) -> None:
    """Overwrite one page in the middle (a table's b-tree page) with garbage."""
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    pages = db.stat().st_size // page
    with open(db, "r+b") as fh:
        fh.seek(page * (pages // 2))
        fh.write(os.urandom(page))


def moved_aside(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if ASIDE.search(p.name)]


@pytest.mark.parametrize("damage", [truncate, random_bytes, bad_page])
def test_corrupt_database_is_moved_aside_and_projects_kept(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    db = filled(tmp_path / "state.sqlite3")
    damage(db)
    store = Store(db, verify=True)
    try:
        assert store.recovered is not None
        aside = moved_aside(tmp_path)
        assert len(aside) == 1, list(tmp_path.iterdir())
        assert str(aside[0]) in store.recovered and str(db) in store.recovered
        assert store.projects() == [
            {"root": "/data/p1", "added": store.projects()[0]["added"], "paused": False},
            {"root": "/data/p2", "added": store.projects()[1]["added"], "paused": True},
        ]
        assert store.history() == []  # a fresh database, usable at once
        store.add_project("/data/p3")
    finally:
        store.close()


def test_without_verify_unreadable_file_is_still_recovered(tmp_path: Path) -> None:
    """What ``thot run`` opens (no quick_check): a file that is not a database."""
    db = filled(tmp_path / "state.sqlite3")
    random_bytes(db)
    store = Store(db)
    assert store.recovered is not None and "not a database" in store.recovered
    store.close()


def test_sound_database_is_not_touched(tmp_path: Path) -> None:
    db = filled(tmp_path / "state.sqlite3")
    store = Store(db, verify=True)
    assert store.recovered is None and len(store.history(limit=1000)) == 300
    store.close()
    assert moved_aside(tmp_path) == []


def test_unopenable_is_not_corrupt(tmp_path: Path) -> None:
    """An error that is not damage (here: the path is a folder) is raised, nothing moved."""
    (tmp_path / "state.sqlite3").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        Store(tmp_path / "state.sqlite3")
    assert moved_aside(tmp_path) == []


def test_projects_file_is_atomic_and_private(tmp_path: Path) -> None:
    db = filled(tmp_path / "state.sqlite3")
    path = projectfile.path_for(db)
    assert path.name == "state.projects.json"
    assert [p["root"] for p in projectfile.load(db)] == ["/data/p1", "/data/p2"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    path.write_text("{not json")
    assert projectfile.load(db) == []  # damaged: ignored, the database is the first source


@pytest.mark.parametrize("damage", [random_bytes, bad_page])
def test_daemon_starts_on_a_corrupt_database(tmp_path: Path, damage) -> None:  # type: ignore[no-untyped-def]
    """The real daemon: a damaged database; it starts, answers, says so, and the projects
    it watched are back."""
    with daemon(tmp_path) as d:
        project = make_project(d.home / "proj")
        d.state_dir.mkdir(parents=True, mode=0o700)
        db = filled(d.state_dir / "state.sqlite3", (str(project),))
        damage(db)
        d.start()
        d.wait_ready()
        status = rpc(d.socket, "status")
        assert [p["root"] for p in status["projects"]] == [str(project)]
        [aside] = moved_aside(d.state_dir)
        assert str(aside) in status["recovered"]  # said in status, not only in the log
        shown = subprocess.run([sys.executable, "-m", "thotd.cli.thotctl", "status"], env=d.env,
                               capture_output=True, text=True, timeout=120)
        assert f"moved it aside to {aside}" in shown.stdout, shown.stdout + shown.stderr
        assert d.stop() == 0
        assert "was unreadable" in d.output() and "Traceback" not in d.output()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("reconcile_minutes", "inf", "finite number"),
    ("reconcile_minutes", "nan", "finite number"),
    ("reconcile_minutes", "1e-7", "greater than or equal to 0.5"),
    ("reconcile_minutes", "1e300", "less than or equal to 10080"),
    ("shutdown_grace_s", "inf", "finite number"),
    ("settle_ms", "100000000", "less than or equal to 60000"),
])
def test_out_of_range_interval_is_a_config_error(tmp_path: Path, key: str, value: str,
                                                 message: str) -> None:
    """Exit 78 with the key and the bound; not a crash (1) and not a spinning loop."""
    config = tmp_path / "config.toml"
    config.write_text(f"[daemon]\n{key} = {value}\n")
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run"),
           "XDG_STATE_HOME": str(tmp_path / "state"), "THOTD_CONFIG": str(config)}
    env.pop("THOTD_SOCKET", None)
    proc = subprocess.run([sys.executable, "-m", "thotd.cli.thotd", "start", "--foreground"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 78, proc.stderr
    assert f"daemon.{key}" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_interval_has_bounds() -> None:
    """No float or int setting is left open-ended: each has a maximum and floats are finite."""
    from thotd.service.config import Config

    def check(model: type) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            annotation = field.annotation
            if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
                check(annotation)
            elif annotation in (int, float):
                kinds = {type(m).__name__ for m in field.metadata}
                assert kinds & {"Le", "Lt"}, f"{model.__name__}.{name} has no upper bound"
                if annotation is float:
                    assert any(getattr(m, "allow_inf_nan", True) is False
                               for m in field.metadata), f"{name} may be inf/nan"

    check(Config)
