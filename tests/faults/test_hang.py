"""Project content that hung or crashed the daemon (issue 11, items 4 to 6).

* An asset's file that is a named pipe froze the daemon in ``open()``; a link to
  ``/dev/zero`` made it read forever. Only regular files are read, in worker threads; the
  others are reported.
* A catastrophic regex froze it (``re`` has no timeout): a search's regexes have a
  deadline, and status keeps answering while a recorded one is asked again.
* A ``_container.json`` of 200,000 ``[`` raised ``RecursionError``: a crash at start, a
  batch silently dropped while running, a traceback from ``thot validate``. It is an
  invalid file now, with where and why.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corekit import await_for, cli, make_tree, wait_for
from daemonkit import Daemon as DaemonProcess
from daemonkit import RpcFailure, make_daemon
from inprocess import call, wait_quiet

from thotd import fingerprint
from thotd.project.search import MATCH_TIMEOUT_S
from thotd.project.vocabulary import MAX_DEPTH
from thotd.service.daemon import Daemon

DEEP = b"[" * 200_000
TOO_DEEP = f"nested deeper than {MAX_DEPTH} levels"


def _project(root: Path) -> Path:
    root.mkdir()
    (root / "_container.json").write_text("{}")
    return root


def _invalid(d: Daemon, root: Path) -> list[str]:
    proj = d.projects[str(root)]
    return [] if proj.engine is None else [str(e) for e in proj.engine.index.errors()]


def test_thot_validate_names_a_file_nested_too_deep(tmp_path: Path) -> None:
    root = _project(tmp_path / "p")
    (root / "deep").mkdir()
    (root / "deep" / "_container.json").write_bytes(DEEP)
    code, out, err = cli("validate", root)
    assert code == 1, (out, err)
    assert f"deep/_container.json:1:{MAX_DEPTH + 1}: invalid JSON: {TOO_DEEP}" in out + err
    assert "Traceback" not in out + err


def test_the_daemon_starts_with_such_a_file_and_reads_one_written_later(
        tmp_path: Path, in_daemon: Callable[..., Any]) -> None:
    root = _project(tmp_path / "p")
    (root / "deep").mkdir()
    (root / "deep" / "_container.json").write_bytes(DEEP)

    async def body(d: Daemon) -> None:
        status = await call(d, "status")
        (proj,) = status["projects"]
        assert proj["error"] is None
        assert [e["reason"] for e in proj["invalid"]] == [f"invalid JSON: {TOO_DEEP}"]
        # Written while it runs: the batch is applied, the file listed as invalid.
        (root / "later").mkdir()
        (root / "later" / "_container.json").write_bytes(DEEP)
        await await_for(lambda: len(_invalid(d, root)) == 2, what="the second deep file listed")
        assert (await call(d, "status"))["projects"][0]["error"] is None

    in_daemon(body, projects=(root,))


# ---------------------------------------------------------------------------- item 4


READER = ("from thot import ThotProject\n"
          "db = ThotProject()\n"
          "print(sorted(a['file'] for a in db.find_assets({'type': 'odd'})))\n")


def _odd_project(root: Path) -> tuple[Path, Path]:
    """A project whose script consumes two assets: one's file is a named pipe, the other's
    a link to /dev/zero. Returns the two files."""
    make_tree(root, {
        "_container.json": {"name": "p"},
        "_scripts.json": [{"script": "read.py"}],
        "read.py": READER,
        "pipe": {"_asset.json": {"type": "odd", "file": "data.csv"}},
        "zero": {"_asset.json": {"type": "odd", "file": "zeros.bin"}},
    })
    pipe = root / "pipe" / "data.csv"
    os.mkfifo(pipe)
    zeros = root / "zero" / "zeros.bin"
    zeros.symlink_to("/dev/zero")
    return pipe, zeros


def _status_in_time(d: DaemonProcess) -> dict[str, Any]:
    """``status``, which must answer within a second."""
    began = time.monotonic()
    status = d.rpc("status", timeout=5)
    assert time.monotonic() - began < 1.0, "status took over a second"
    return status


def test_a_pipe_or_a_device_as_an_asset_file_never_blocks_the_daemon(tmp_path: Path) -> None:
    """A FIFO as an asset's file froze the daemon in ``open()`` (on restart, before its
    socket came up); a link to /dev/zero made it read forever. A real daemon process: a
    hang in-process would hang the test."""
    root = tmp_path / "p"
    pipe, zeros = _odd_project(root)
    with make_daemon(tmp_path) as d:
        d.configure()
        d.start(timeout=30)
        d.rpc("add", {"path": str(root)}, timeout=10)

        def reported() -> list[dict[str, Any]]:
            (proj,) = _status_in_time(d)["projects"]
            return proj["unreadable"] if proj["counts"].get("ok") else []

        unreadable = wait_for(reported, 60, "the run recorded, the odd files reported")
        assert {u["file"]: u["why"].split(":")[0] for u in unreadable} == {
            str(pipe): "a named pipe (FIFO)", str(zeros): "a character device"}
        # Restarted after the pipe moved (its stat no longer that of the record): it is
        # checked again, off the loop, and the socket comes up and answers throughout.
        d.stop(timeout=30)
        st = os.stat(pipe)
        os.utime(pipe, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
        d.start(timeout=30)
        wait_for(lambda: any(p["unreadable"] for p in _status_in_time(d)["projects"]), 30,
                 "the pipe reported again after the restart")
        d.wait_quiet(timeout=60)
        _status_in_time(d)
        assert d.alive()


# ---------------------------------------------------------------------------- item 6

CATASTROPHIC = r"(x+x+)+y"  # backtracks 2^n times on n x's not followed by y
ASKER = ("from thot import ThotProject\n"
         "db = ThotProject()\n"
         f"print(len(db.find_containers({{'name': {{'$regex': {CATASTROPHIC!r}}}}})))\n")


class StatusWatch:
    """Polls ``status`` from a thread while a test does something else; records the
    slowest answer."""

    def __init__(self, d: DaemonProcess) -> None:
        self.d, self.slowest, self.calls = d, 0.0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                self.d.rpc("status", timeout=10)
            except OSError:
                self.slowest = max(self.slowest, 10.0)
            self.slowest = max(self.slowest, time.monotonic() - began)
            self.calls += 1

    def __enter__(self) -> StatusWatch:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def test_a_catastrophic_regex_stops_at_its_deadline_and_status_keeps_answering(
        tmp_path: Path) -> None:
    """A search's regex froze the daemon (``re`` has no timeout), and asking a recorded one
    again after a file change stalled ``status`` for 17 s."""
    root = tmp_path / "p"
    make_tree(root, {"_container.json": {"name": "p"}, "_scripts.json": [{"script": "ask.py"}],
                     "ask.py": ASKER, "a": {"_container.json": {"name": "short"}}})
    with make_daemon(tmp_path) as d:
        d.configure()
        d.start(timeout=30)
        d.add(root, timeout=60)
        assert [r["status"] for r in d.runs()] == ["ok"]  # its regex query is recorded
        with StatusWatch(d) as watch:
            # A value the pattern backtracks on: the recorded query is asked again.
            make_tree(root, {"slow": {"_container.json": {"name": "x" * 5000}}})
            wait_for(lambda: d.project(root)["objects"] == 3, 30, "the new container indexed")
            d.wait_quiet(timeout=60)
            # Asked directly: a clear error naming the pattern and the limit.
            with pytest.raises(RpcFailure) as caught:
                d.rpc("query", {"project": str(root), "start": str(root), "kind": "container",
                                "search": {"name": {"$regex": CATASTROPHIC}}}, timeout=10)
            assert CATASTROPHIC in str(caught.value)
            assert f"over {MATCH_TIMEOUT_S:g} s" in str(caught.value)
            wait_for(lambda: watch.calls >= 3, 10, "status polled")
        assert watch.slowest < 1.0, f"status took {watch.slowest:.2f} s"
        assert d.alive()


def test_the_daemon_reads_file_content_only_off_its_loop(
        tmp_path: Path, in_daemon: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Every content read (``fingerprint._read_regular``) of a daemon happens in a worker
    thread, and the result is the same as reading on the loop: a touch reruns nothing, a
    change of content reruns the reader once."""
    root = tmp_path / "p"
    make_tree(root, {
        "_container.json": {"name": "p"},
        "_scripts.json": [{"script": "read.py"}],
        "read.py": READER.replace("'odd'", "'raw'"),
        "a": {"_asset.json": {"type": "raw", "file": "data.csv"}, "data.csv": "1,2\n"},
    })
    data = root / "a" / "data.csv"
    readers: list[str] = []
    real = fingerprint._read_regular

    def spy(path: str) -> Any:
        readers.append(threading.current_thread().name)
        return real(path)

    monkeypatch.setattr(fingerprint, "_read_regular", spy)

    async def body(d: Daemon) -> None:
        await wait_quiet(d)
        assert [r["status"] for r in (await call(d, "runs"))["runs"]] == ["ok"]
        engine = d.projects[str(root)].engine
        assert engine is not None
        hashed = len(engine.hasher.cache)
        st = os.stat(data)
        os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # a touch
        await await_for(lambda: len(engine.hasher.cache) > hashed, what="the touched file hashed")
        await wait_quiet(d)
        assert engine.completed == 1  # same content: nothing ran
        data.write_text("3,4\n")  # same size, new content
        await await_for(lambda: engine.completed == 2, what="the rerun")
        await wait_quiet(d)
        runs = (await call(d, "runs", {"limit": 10}))["runs"]
        assert [r["status"] for r in runs] == ["ok", "ok"]

    in_daemon(body, projects=(root,))
    loop_thread = threading.main_thread().name
    assert readers and loop_thread not in readers, readers
