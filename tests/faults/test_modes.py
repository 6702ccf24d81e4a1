"""Every file and folder thotd creates is 0600/0700, whatever the umask (issue 11, item 3).

Run logs and the state reveal what a user analyses. The cases run with ``umask 000``,
which makes any file created without an explicit mode world-readable and writable.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from thotd import paths
from thotd.engine.state import Store

from .trustkit import REPO, daemon, make_project, rpc, wait_for


@contextlib.contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def loose(*roots: Path) -> list[str]:
    """Everything under ``roots`` (themselves included) wider than 0700/0600."""
    out = []
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for name in [".", *dirs, *files]:
                path = os.path.normpath(os.path.join(folder, name))
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    continue
                want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
                if stat.S_IMODE(st.st_mode) != want:
                    out.append(f"{path} {stat.S_IMODE(st.st_mode):04o}")
    return sorted(set(out))


def test_store_files_are_private_under_umask_0(tmp_path: Path) -> None:
    """``--state`` pointing into folders that do not exist yet: all are made 0700, the
    database and its -wal/-shm 0600, and the projects file too."""
    db = tmp_path / "new" / "deeper" / "state.sqlite3"
    with umask(0):
        store = Store(db)
        store.add_project("/somewhere")
        assert Path(f"{db}-wal").exists() and Path(f"{db}-shm").exists()
        assert loose(tmp_path / "new") == []
        store.close()


def test_existing_user_folder_keeps_its_mode(tmp_path: Path) -> None:
    """``--state ./mine.db`` in a folder of the user's: the folder is not ours to chmod."""
    folder = tmp_path / "work"
    folder.mkdir()
    os.chmod(folder, 0o755)
    with umask(0):
        Store(folder / "mine.db").close()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((folder / "mine.db").stat().st_mode) == 0o600


def test_database_of_an_older_version_is_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite3"
    Store(db).close()
    os.chmod(db, 0o644)
    Store(db).close()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_path_helpers_under_umask_0(tmp_path: Path) -> None:
    with umask(0):
        made = paths.private_dir(tmp_path / "a" / "b")
        fd = paths.open_private(made / "log", os.O_WRONLY | os.O_CREAT)
        os.close(fd)
        with open(made / "other", "ab", opener=paths.private_file_opener) as fh:
            fh.write(b"x")
        paths.make_dirs(tmp_path / "c" / "d")
    assert loose(tmp_path / "a", tmp_path / "c") == []
    # A folder of ours left wide by an older version is narrowed.
    os.chmod(made, 0o755)
    paths.private_dir(made)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_thot_run_state_is_private_under_umask_0(tmp_path: Path) -> None:
    """The one-shot runner with ``--state`` in a new folder: database, run logs, snapshot."""
    project = make_project(tmp_path / "proj")
    state = tmp_path / "st" / "state.sqlite3"
    proc = subprocess.run(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root",
         str(project)],
        env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=300, umask=0,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wait_for(lambda: (tmp_path / "st" / "snapshots").exists(), 30, "the snapshot")
    assert loose(tmp_path / "st") == []


def test_daemon_files_are_private_under_umask_0(tmp_path: Path) -> None:
    """The daemon creates its runtime, state and log folders itself, socket and lock
    included, and runs a script (run log, record)."""
    with daemon(tmp_path) as d:
        d.start(umask=0)
        d.wait_ready()
        project = make_project(d.home / "proj")
        rpc(d.socket, "add", {"path": str(project)})
        wait_for(lambda: rpc(d.socket, "runs", {"limit": 10})["runs"], 120, "a run")
        rpc(d.socket, "wait", {"timeout": 120}, timeout=150)
        runtime = Path(d.env["XDG_RUNTIME_DIR"]) / "thotd"
        assert stat.S_IMODE(os.stat(runtime).st_mode) == 0o700
        assert stat.S_IMODE(os.lstat(d.socket).st_mode) == 0o600
        problems = loose(runtime, d.state_dir)
        d.stop()
    assert problems == []


def test_daemon_log_files_are_private_after_rotation(tmp_path: Path) -> None:
    """The daemon's own log (and the files a rollover opens) under umask 0."""
    import logging

    from thotd.service.logs import _open_log_file

    log_file = tmp_path / "log" / "thotd.log"
    with umask(0):
        handler = _open_log_file(log_file)
        assert isinstance(handler, logging.handlers.RotatingFileHandler)
        handler.maxBytes = 200
        try:
            for n in range(20):
                handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "x" * 50 + str(n),
                                               None, None))
        finally:
            handler.close()
    assert (tmp_path / "log" / "thotd.log.1").exists()
    assert loose(tmp_path / "log") == []
