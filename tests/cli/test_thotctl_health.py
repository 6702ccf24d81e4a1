"""``thotctl status``, ``wait`` and ``runs`` tell a script what it must act on, in their exit
codes as well as in words: a cron job alerts on failed, invalid or blocked work, a wait does
not call a project stuck behind an invalid file "quiet", and ``runs`` keeps ``thot run``'s
history (same state database) apart from the daemon's.

The daemon serves in this process on a real socket; ``thotctl`` is the real command, in its
own process (the daemon's log output stays out of what it prints).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corekit import await_for, run_json
from inprocess import call, wait_quiet

from thotd import exits
from thotd.service.daemon import Daemon


async def ctl(daemon: Daemon, *args: str) -> tuple[int, str, str]:
    """``thotctl --socket S ARGS`` against ``daemon``: (exit code, stdout, stderr)."""
    cmd = [sys.executable, "-m", "thotd.cli.thotctl", "--socket", str(daemon.socket_path), *args]
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True,
                                   errors="replace", timeout=120)
    return done.returncode, done.stdout, done.stderr


def _break(asset: Path) -> None:
    asset.write_text('{"type": "raw", "file": ')


def test_a_healthy_project_exits_0_and_says_so(in_daemon: Callable[..., Any], gs: Path) -> None:
    async def body(daemon: Daemon) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        await call(daemon, "add", {"path": str(gs)})
        await wait_quiet(daemon)
        return await ctl(daemon, "status"), await ctl(daemon, "status", "--json")

    (code, text, _), (jcode, out, _) = in_daemon(body)
    assert code == jcode == exits.OK
    assert "1 project, 0 running" in text  # not "1 projects"
    assert "not healthy" not in text
    data = json.loads(out)
    assert data["healthy"] is True and data["problems"] == []


def test_status_exits_1_on_invalid_and_blocked_work(in_daemon: Callable[..., Any], gs: Path) -> None:
    asset = gs / "group-0" / "sample-000" / "raw" / "_asset.json"

    async def body(daemon: Daemon) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        await call(daemon, "add", {"path": str(gs)})
        await wait_quiet(daemon)
        _break(asset)
        proj = daemon.projects[str(gs)]
        await await_for(lambda: proj.engine is not None and proj.engine.index.errors(), 30,
                        "the invalid file to be seen")
        return await ctl(daemon, "status"), await ctl(daemon, "status", "--json")

    (code, text, err), (jcode, out, _) = in_daemon(body)
    assert code == jcode == exits.FAILURE
    assert err == ""
    assert f"3 runs blocked by {asset}" in text  # sample, its group, the summary
    assert "not healthy: 2 problems" in text
    data = json.loads(out)
    assert data["healthy"] is False
    assert [(p["kind"], p.get("file")) for p in data["problems"]] == [
        ("invalid", str(asset)), ("blocked", str(asset))]
    assert data["problems"][1]["runs"] == 3


def test_status_exits_1_on_a_failed_run(in_daemon: Callable[..., Any], gs: Path) -> None:
    (gs.parent / "analysis" / "broken.py").write_text("import sys\nsys.exit(3)\n")
    (gs / "group-1" / "_scripts.json").write_text(json.dumps(
        [{"script": "root:/../analysis/group.py"}, {"script": "root:/../analysis/broken.py"}]))

    async def body(daemon: Daemon) -> tuple[int, str, str]:
        await call(daemon, "add", {"path": str(gs)})
        await wait_quiet(daemon)
        return await ctl(daemon, "status", "--json")

    code, out, _ = in_daemon(body)
    assert code == exits.FAILURE
    problems = json.loads(out)["problems"]
    assert [(p["kind"], os.path.basename(p["script"])) for p in problems] == [("failed", "broken.py")]


def test_wait_names_the_file_runs_wait_for_and_exits_blocked(
        in_daemon: Callable[..., Any], gs: Path) -> None:
    asset = gs / "group-0" / "sample-000" / "raw" / "_asset.json"

    async def body(daemon: Daemon) -> tuple[int, str, str]:
        await call(daemon, "add", {"path": str(gs)})
        await wait_quiet(daemon)
        _break(asset)
        proj = daemon.projects[str(gs)]
        await await_for(lambda: proj.queue, 30, "the broken sample's runs to be queued")
        return await ctl(daemon, "wait", "--timeout", "60")

    code, out, err = in_daemon(body)
    assert (code, err) == (exits.BLOCKED, "")
    assert out.startswith("waiting for a fix: ")
    assert out.rstrip().endswith(f"blocked by {asset}")
    assert "quiet" not in out


def test_runs_keeps_thot_runs_history_apart(in_daemon: Callable[..., Any], gs: Path,
                                            tmp_path: Path, tree: Callable[..., Path]) -> None:
    """``thot run`` on a project the daemon does not watch writes to the same history."""
    other = tree({"_container.json": {"type": "project"},
                  "_scripts.json": [{"script": "root:/../one.py"}]}, name="other")
    (tmp_path / "one.py").write_text("pass\n")

    async def body(daemon: Daemon) -> dict[str, Any]:
        await call(daemon, "add", {"path": str(gs)})
        await wait_quiet(daemon)
        code, _ = await asyncio.to_thread(run_json, daemon.store_path, other)
        assert code == 0
        return {"watched": await ctl(daemon, "runs", "--json", "-n", "100"),
                "all": await ctl(daemon, "runs", "--json", "--all", "-n", "100"),
                "text": await ctl(daemon, "runs", "--all", "-n", "100"),
                "other": await ctl(daemon, "runs", "--json", "--all", str(other)),
                "refused": await ctl(daemon, "runs", str(other))}

    seen = in_daemon(body)
    watched = json.loads(seen["watched"][1])["runs"]
    everything = json.loads(seen["all"][1])["runs"]
    assert {r["project"] for r in watched} == {str(gs)}
    assert all(r["watched"] for r in watched)
    assert [r["project"] for r in everything if not r["watched"]] == [str(other)]
    assert len(everything) == len(watched) + 1
    unwatched = [line for line in seen["text"][1].splitlines() if "(not watched)" in line]
    assert len(unwatched) == 1 and "one.py" in unwatched[0]
    assert [r["project"] for r in json.loads(seen["other"][1])["runs"]] == [str(other)]
    code, _, err = seen["refused"]
    assert code == exits.FAILURE and "is in no registered project" in err


def test_add_of_a_missing_path_says_it_does_not_exist(in_daemon: Callable[..., Any],
                                                       tmp_path: Path) -> None:
    missing = tmp_path / "no-such-project"

    async def body(daemon: Daemon) -> tuple[int, str, str]:
        return await ctl(daemon, "add", str(missing))

    code, out, err = in_daemon(body)
    assert code == exits.FAILURE
    assert err == f"thotctl: {missing} does not exist\n"


def test_folder_names_with_control_characters_print_escaped(
        in_daemon: Callable[..., Any], tree: Callable[..., Path]) -> None:
    odd = tree({"_container.json": {"type": "project"}}, name="a\nb\x1b[2J")

    async def body(daemon: Daemon) -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        await call(daemon, "add", {"path": str(odd)})
        await wait_quiet(daemon)
        return await ctl(daemon, "status"), await ctl(daemon, "status", "--json")

    (code, text, _), (_, out, _) = in_daemon(body)
    assert code == exits.OK
    assert "\x1b" not in text
    assert str(odd).replace("\n", "\\n").replace("\x1b", "\\x1b") in text.splitlines()
    assert json.loads(out)["projects"][0]["root"] == str(odd)  # JSON keeps the name
