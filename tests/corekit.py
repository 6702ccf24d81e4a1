"""The test kit every folder shares: project trees from dict specs, the G×S generator (from
``bench/gen.py``), the one poll-with-a-deadline (:func:`wait_for`, :func:`await_for`), an
in-process ``thot`` CLI and the one oracle (:func:`oracle`: the derived assets of a fresh full
run, compared with :func:`derived_assets`). The real-process daemon harness is ``daemonkit``.

A module with a unique name (not ``conftest``): other test folders have their own
``conftest``, and ``from conftest import …`` would pick whichever was imported first.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "thotd" / "example"

if str(REPO / "bench") not in sys.path:
    sys.path.insert(0, str(REPO / "bench"))

from gen import GS_SCRIPTS, add_sample, make_gs, sample_values  # noqa: E402

__all__ = [
    "EXAMPLE",
    "GS_SCRIPTS",
    "REPO",
    "THOT_VARS",
    "add_sample",
    "backup_db",
    "cli",
    "derived_assets",
    "group_dead",
    "make_gs",
    "make_tree",
    "rel_runs",
    "restore_tree",
    "run_json",
    "sample_values",
    "snapshot_index",
    "await_for",
    "oracle",
    "user_files",
    "wait_for",
    "wait_past_racy_window",
]

T = TypeVar("T")

THOT_VARS = (
    "THOT_CONTAINER_ID", "THOT_SCRIPT_ID", "THOT_PROJECT_ROOT", "THOT_RECORD",
    "THOTD_QUERY_SOCKET", "THOT_ORIGINAL_DIR",
)


# ---------------------------------------------------------------------------- trees


def make_tree(root: Path, spec: Mapping[str, Any]) -> Path:
    """Write ``spec`` under ``root``.

    A key maps to: a dict → a sub-folder (recursively), except for ``*.json`` keys whose
    dict/list value is written as JSON; a str → a text file; bytes → a binary file;
    ``None`` → an empty folder.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = root / name
        if name.endswith(".json") and isinstance(value, dict | list):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
        elif isinstance(value, dict):
            make_tree(path, value)
        elif value is None:
            path.mkdir(parents=True, exist_ok=True)
        elif isinstance(value, bytes):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(value)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(str(value), encoding="utf-8")
    return root


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 15.0) -> None:
    """End a server a test started (scheduler, worker, slurmd): SIGTERM, ``grace_s``, then
    SIGKILL; reaped either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(grace_s)


def missing(reason: str) -> NoReturn:
    """Skip a test whose system parts are not installed, visibly; fail under ``CI=true``,
    where ``.ci/run`` installs them and a skip would hide that they never ran."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def wait_for(cond: Callable[[], T], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.02) -> T:
    """Poll ``cond`` until it returns something truthy and return that; fail with ``what`` at
    the deadline. The deadline is generous: only reached when something is broken."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


async def await_for(cond: Callable[[], T], timeout: float = 30.0, what: str = "condition",
                    interval: float = 0.02) -> T:
    """:func:`wait_for` inside an event loop: the loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def group_dead(pgid: int) -> bool:
    """True once every process of the group has exited (zombies awaiting init count as dead:
    some inits reap orphans only every second or two)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_bytes()
        except OSError:
            continue
        state, _ppid, pgrp = stat_line[stat_line.rfind(b")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in (b"Z", b"X"):
            return False
    return True


def wait_past_racy_window(root: Path) -> None:
    """Let the clock move past the racy window (``thotd.fingerprint.RACY_NS``) of everything under
    ``root``, so a snapshot may trust those files' signatures: a wait on the clock, the one
    condition here, not a sleep in the hope of an event."""
    from thotd.fingerprint import RACY_NS

    newest = max(os.lstat(os.path.join(d, n)).st_ctime_ns
                 for d, dirs, files in os.walk(root) for n in [*dirs, *files, "."])
    deadline = time.monotonic() + 5
    while time.time_ns() < newest + RACY_NS + 5_000_000:
        assert time.monotonic() < deadline, "the clock does not move"
        time.sleep(0.01)


# ---------------------------------------------------------------------------- the CLI


def cli(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
    """Run ``thot ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from thotd.cli.thot import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([os.fspath(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def run_json(state: Path, root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    """``thot --state S run --root R --json EXTRA``; returns (exit code, parsed report)."""
    code, out, err = cli("--state", state, "run", "--root", root, "--json", *extra)
    try:
        return code, json.loads(out)
    except ValueError:
        raise AssertionError(f"thot run printed no JSON (exit {code}):\n{out}\n{err}") from None


def rel_runs(report: dict[str, Any], root: Path, statuses: tuple[str, ...] | None = ("ok",)) -> list[tuple[str, str]]:
    """The runs of a ``--json`` report as sorted (container relative to root, script name)."""
    out = []
    for r in report["runs"]:
        if statuses is None or r["status"] in statuses:
            rel = os.path.relpath(r["container"], root)
            out.append((rel, os.path.basename(r["script"])))
    return sorted(out)


# ---------------------------------------------------------------------------- comparisons


def snapshot_index(index: Any) -> tuple[dict[str, Any], list[str], list[str]]:
    """What must match between an incrementally updated and a freshly loaded index: every
    valid object's view (below valid ancestors), every object id, every error."""
    views = {}
    for node in index.walk():
        if all(index.nodes[a].valid for a in index.ancestors(node.id)):
            views[node.id] = dict(index.view(node.id))
    return views, sorted(index.nodes), sorted(str(e) for e in index.errors())


def derived_assets(project: Path) -> dict[str, tuple[dict[str, Any], bytes | None]]:
    """Every asset a script made: relative folder -> (its ``_asset.json`` minus ``creator``,
    its data file's bytes)."""
    out: dict[str, tuple[dict[str, Any], bytes | None]] = {}
    for dirpath, _dirs, files in os.walk(project):
        if "_asset.json" not in files:
            continue
        try:
            props = json.loads(Path(dirpath, "_asset.json").read_text(encoding="utf-8"))
        except ValueError:
            continue
        if not isinstance(props, dict) or props.get("creator_type") != "script":
            continue
        props.pop("creator", None)
        data_path = Path(dirpath, str(props.get("file", "")))
        data = data_path.read_bytes() if data_path.is_file() else None
        out[os.path.relpath(dirpath, project)] = (props, data)
    return out


def backup_db(src: Path, dst: Path) -> None:
    """Copy a SQLite file consistently (WAL included)."""
    with contextlib.closing(sqlite3.connect(src)) as a, contextlib.closing(sqlite3.connect(dst)) as b:
        a.backup(b)


def restore_tree(src: Path, dst: Path) -> None:
    """Make ``dst`` an exact copy of ``src``, mtimes included (so fingerprints match)."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, symlinks=True)



def _is_script_asset(folder: str | os.PathLike[str]) -> bool:
    try:
        props = json.loads(Path(folder, "_asset.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(props, dict) and props.get("creator_type") == "script"


def user_files(root: Path) -> dict[str, str]:
    """Every file a person put under ``root`` (not what scripts made) -> content digest."""
    out: dict[str, str] = {}
    for dirpath, dirs, files in os.walk(root):
        if _is_script_asset(dirpath):
            dirs[:] = []
            continue
        for name in files:
            data = Path(dirpath, name).read_bytes()
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (
                hashlib.blake2b(data, digest_size=16).hexdigest())
    return out


def oracle(work: Path, project_name: str, scratch: Path) -> dict[str, tuple[dict[str, Any], bytes | None]]:
    """The oracle: the derived assets (:func:`derived_assets`) of a fresh full ``thot run``,
    with a fresh state db, of a copy of ``work`` without what scripts made. Whatever brought
    ``work/project_name`` to its state (incremental runs, a daemon, crashes) must match it."""
    if scratch.exists():
        shutil.rmtree(scratch)

    def made_by_scripts(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if os.path.isdir(os.path.join(folder, n))
                and _is_script_asset(os.path.join(folder, n))]

    shutil.copytree(work, scratch, ignore=made_by_scripts)
    code, report = run_json(scratch / "oracle.sqlite3", scratch / project_name, "--jobs", "2")
    assert code == 0, f"oracle run failed: {report}"
    return derived_assets(scratch / project_name)
