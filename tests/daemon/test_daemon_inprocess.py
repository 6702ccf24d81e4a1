"""The daemon in process: its methods answer on its socket while its state is read directly,
and stopping it closes what it opened (the socket, the store)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from corekit import add_sample, await_for
from daemonkit import InProcess


def test_add_runs_the_project_once_and_status_agrees(inproc: InProcess, gs: Path) -> None:
    async def body(daemon: Any) -> dict[str, Any]:
        await inproc.call("add", {"path": str(gs)})
        assert (await inproc.call("wait", {"timeout": 120}))["quiet"]
        assert daemon.quiet()
        assert list(daemon.projects) == [str(gs)]
        runs = (await inproc.call("runs", {"limit": 100}))["runs"]
        status = await inproc.call("status")
        return {"runs": runs, "status": status}

    seen = inproc.run(body)
    assert len(seen["runs"]) == 4 + 2 + 1
    assert {r["status"] for r in seen["runs"]} == {"ok"}
    assert [p["root"] for p in seen["status"]["projects"]] == [str(gs)]
    assert (gs / "summary" / "summary.txt").exists()
    assert inproc.exit_code == 0


def test_a_new_sample_reruns_its_chain_in_process(inproc: InProcess, gs: Path) -> None:
    async def body(daemon: Any) -> list[tuple[str, str]]:
        await inproc.call("add", {"path": str(gs)})
        await inproc.call("wait", {"timeout": 120})
        before = {r["id"] for r in (await inproc.call("runs", {"limit": 100}))["runs"]}
        add_sample(gs, "group-1", "sample-007")
        await await_for(lambda: not daemon.quiet(), 30, "the drop to be noticed")
        await inproc.call("wait", {"timeout": 120})
        runs = (await inproc.call("runs", {"limit": 100}))["runs"]
        return sorted((os.path.basename(r["script"]), os.path.basename(r["container"]))
                      for r in runs if r["id"] not in before)

    assert inproc.run(body) == [
        ("group.py", "group-1"), ("sample.py", "sample-007"), ("summary.py", "project"),
    ]


def test_stopping_closes_the_socket(inproc: InProcess) -> None:
    async def body(daemon: Any) -> list[str]:
        return (await inproc.call("hello"))["methods"]

    methods = inproc.run(body)
    assert {"add", "status", "wait", "runs"} <= set(methods)
    assert inproc.exit_code == 0
    assert not inproc.socket.exists()
