"""Project content that hung or crashed the daemon (issue 11, items 4 to 6).

* A ``_container.json`` of 200,000 ``[`` raised ``RecursionError``: a crash at start, a
  batch silently dropped while running, a traceback from ``thot validate``. It is an
  invalid file now, with where and why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from corekit import await_for, cli
from inprocess import call

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
