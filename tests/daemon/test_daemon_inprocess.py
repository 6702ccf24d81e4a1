"""The daemon in process: its methods answer on its socket while its state is read directly,
and stopping it closes what it opened (the socket)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corekit import add_sample, await_for
from inprocess import call

from thotd.service.daemon import Daemon


def test_add_runs_the_project_once_and_status_agrees(in_daemon: Callable[..., Any],
                                                      gs: Path) -> None:
    async def body(daemon: Daemon) -> dict[str, Any]:
        await call(daemon, "add", {"path": str(gs)})
        assert (await call(daemon, "wait", {"timeout": 120}))["quiet"]
        assert daemon.quiet()
        assert list(daemon.projects) == [str(gs)]
        runs = (await call(daemon, "runs", {"limit": 100}))["runs"]
        status = await call(daemon, "status")
        return {"runs": runs, "status": status}

    seen = in_daemon(body)
    assert len(seen["runs"]) == 4 + 2 + 1
    assert {r["status"] for r in seen["runs"]} == {"ok"}
    assert [p["root"] for p in seen["status"]["projects"]] == [str(gs)]
    assert (gs / "summary" / "summary.txt").exists()


def test_a_new_sample_reruns_its_chain_in_process(in_daemon: Callable[..., Any],
                                                   gs: Path) -> None:
    async def body(daemon: Daemon) -> list[tuple[str, str]]:
        await call(daemon, "add", {"path": str(gs)})
        await call(daemon, "wait", {"timeout": 120})
        before = {r["id"] for r in (await call(daemon, "runs", {"limit": 100}))["runs"]}
        add_sample(gs, "group-1", "sample-007")
        await await_for(lambda: not daemon.quiet(), 30, "the drop to be noticed")
        await call(daemon, "wait", {"timeout": 120})
        runs = (await call(daemon, "runs", {"limit": 100}))["runs"]
        return sorted((os.path.basename(r["script"]), os.path.basename(r["container"]))
                      for r in runs if r["id"] not in before)

    assert in_daemon(body) == [
        ("group.py", "group-1"), ("sample.py", "sample-007"), ("summary.py", "project"),
    ]


def test_stopping_closes_the_socket(in_daemon: Callable[..., Any]) -> None:
    sockets: list[Path] = []

    async def body(daemon: Daemon) -> list[str]:
        sockets.append(daemon.socket_path)
        return list((await call(daemon, "hello"))["methods"])

    methods = in_daemon(body)
    assert {"add", "status", "wait", "runs"} <= set(methods)
    assert not sockets[0].exists()
