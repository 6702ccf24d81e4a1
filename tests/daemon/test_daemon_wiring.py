"""What the daemon wires in from the engine (issue 11): the trust check where runs start,
the projects file beside the database, and the run-log limits of ``[run_logs]``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from corekit import make_tree
from inprocess import call, small_config

from thotd.engine import projectfile
from thotd.service.daemon import Daemon


def two_runs(root: Path) -> Path:
    """A project whose root and one sub-container each run their own script."""
    return make_tree(root, {
        "_container.json": {},
        "_scripts.json": [{"script": "top.py"}],
        "top.py": "open(__file__ + '.ran', 'w').write('ok')\n",
        "sub": {"_container.json": {}, "_scripts.json": [{"script": "sub.py"}],
                "sub.py": "open(__file__ + '.ran', 'w').write('ok')\n"},
    })


def test_a_script_anyone_can_write_is_blocked_with_its_reason(
        in_daemon: Callable[..., Any], tmp_path: Path) -> None:
    """Refused where it would start: blocked in status (file, mode, the fix), never run;
    the others run; once fixed, a rerun runs it."""
    root = two_runs(tmp_path / "proj")
    script = root / "sub" / "sub.py"
    os.chmod(script, 0o666)

    async def body(d: Daemon) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
        await call(d, "add", {"path": str(root)})
        assert (await call(d, "wait", {"timeout": 120}))["quiet"]
        status = await call(d, "status")
        blocked_events = [e for e in d.events if e.get("state") == "blocked"]
        assert not (root / "sub" / "sub.py.ran").exists(), "a script anyone can write ran"
        os.chmod(script, 0o644)
        await call(d, "rerun", {"path": str(root / "sub")})
        assert (await call(d, "wait", {"timeout": 120}))["quiet"]
        after = await call(d, "status")
        return status, blocked_events, bool(after["projects"][0]["blocked"])

    status, events, still_blocked = in_daemon(body)
    [proj] = status["projects"]
    [blocked] = proj["blocked"]
    assert blocked["script"] == str(script) and blocked["file"] == str(script)
    assert "writable by everyone" in blocked["reason"] and f"chmod o-w {script}" in blocked["reason"]
    assert len(events) == 1
    # and as a problem to act on, the reason in its message (thotctl status prints it)
    assert [m["message"] for m in status["problems"]] == [f"blocked: {blocked['reason']}"]
    assert (root / "top.py.ran").exists()
    assert (root / "sub" / "sub.py.ran").exists()  # ran after the fix
    assert not still_blocked


def test_the_projects_file_follows_add_pause_and_remove(
        in_daemon: Callable[..., Any], tmp_path: Path) -> None:
    one, two = two_runs(tmp_path / "one"), two_runs(tmp_path / "two")

    async def body(d: Daemon) -> list[list[dict[str, Any]]]:
        seen = []
        for method, path in (("add", one), ("add", two), ("pause", two), ("remove", one)):
            await call(d, method, {"path": str(path)})
            seen.append(projectfile.load(d.store_path))
        return seen

    added, both, paused, removed = in_daemon(body)
    assert added == [{"root": str(one), "paused": False}]
    assert both == [{"root": str(one), "paused": False}, {"root": str(two), "paused": False}]
    assert paused == [{"root": str(one), "paused": False}, {"root": str(two), "paused": True}]
    assert removed == [{"root": str(two), "paused": True}]


def test_run_logs_are_kept_as_the_config_says(in_daemon: Callable[..., Any],
                                              tmp_path: Path) -> None:
    root = two_runs(tmp_path / "proj")
    config = small_config(run_logs={"keep_per_run": 2})

    async def body(d: Daemon) -> list[int]:
        await call(d, "add", {"path": str(root)})
        for _ in range(4):
            assert (await call(d, "wait", {"timeout": 120}))["quiet"]
            await call(d, "rerun", {"path": str(root)})
        assert (await call(d, "wait", {"timeout": 120}))["quiet"]
        runs = d.store_path.parent / "runs"
        assert all(os.path.exists(r["log"]) for r in (await call(d, "runs", {"limit": 2}))["runs"])
        return sorted(len(list(folder.glob("*.log"))) for folder in runs.iterdir())

    assert in_daemon(body, config=config) == [2, 2]


def test_a_reload_that_trusts_the_group_runs_what_was_blocked(
        in_daemon: Callable[..., Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root, to give a file to a shared group")
    root = two_runs(tmp_path / "proj")
    script = root / "sub" / "sub.py"
    os.chown(script, 0, 65534)  # group nogroup, not the owner's own group
    os.chmod(script, 0o664)
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("THOTD_CONFIG", str(config))

    async def body(d: Daemon) -> tuple[list[dict[str, Any]], list[dict[str, Any]], bool]:
        await call(d, "add", {"path": str(root)})
        assert (await call(d, "wait", {"timeout": 120}))["quiet"]
        before = (await call(d, "plan"))["plan"]
        config.write_text('[trust]\nallow = ["group:nogroup"]\n')
        assert (await call(d, "reload"))["reloaded"]
        assert (await call(d, "wait", {"timeout": 120}))["quiet"]
        return before, (await call(d, "status"))["projects"][0]["blocked"], (
            root / "sub" / "sub.py.ran").exists()

    before, blocked, ran = in_daemon(body)
    [planned] = before
    assert planned["blocked"] and "writable by group nogroup" in planned["reasons"][0]
    assert f"to the config ({config})" in planned["reasons"][0]
    assert ran and blocked == []
