"""The control methods as plain functions, on an in-process daemon and a real project.

Each method of :data:`thotd.service.methods.METHODS` is called directly with a daemon and
a params dict; the daemon serves a 1×2 G×S project on disk (two sample runs, one group
run, one summary run) whose scripts really run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from corekit import add_sample, make_gs
from inprocess import wait_quiet

from thotd.service import methods
from thotd.service.daemon import Daemon
from thotd.service.rpc import INVALID_PARAMS, RpcError

RUNS = 4  # two samples, one group, the summary


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return make_gs(tmp_path / "work", 1, 2)


def _sample_run(project: Path) -> str:
    return str(project / "group-0" / "sample-000")


def test_the_table_is_what_the_socket_serves(in_daemon: Any) -> None:
    async def body(d: Daemon) -> set[str]:
        return set(methods.handlers(d))

    served = in_daemon(body)
    assert served == set(methods.METHODS) | set(methods.STREAMS)
    assert {"status", "runs", "pause", "resume", "rerun", "why", "subscribe"} <= served


def test_status_shows_the_project_and_its_runs(in_daemon: Any, project: Path) -> None:
    async def body(d: Daemon) -> Any:
        await wait_quiet(d)
        return await methods.status(d, {})

    st = in_daemon(body, projects=(project,))
    assert st["pid"] == os.getpid()
    assert st["quiet"] is True
    [proj] = st["projects"]
    assert proj["root"] == str(project)
    assert proj["counts"] == {"ok": RUNS}
    assert proj["running"] == proj["queued"] == proj["failures"] == []


def test_runs_lists_finished_runs_newest_first(in_daemon: Any, project: Path) -> None:
    async def body(d: Daemon) -> Any:
        await wait_quiet(d)
        every = await methods.runs(d, {})
        mine = await methods.runs(d, {"project": str(project), "limit": 2})
        entry = await methods.log(d, {"id": every["runs"][0]["id"]})
        return every["runs"], mine["runs"], entry

    every, mine, entry = in_daemon(body, projects=(project,))
    assert len(every) == RUNS and {r["status"] for r in every} == {"ok"}
    assert [r["id"] for r in every] == sorted((r["id"] for r in every), reverse=True)
    assert mine == every[:2]
    assert entry["id"] == every[0]["id"] and entry["running"] is False
    assert os.path.isfile(entry["log"])


def test_bad_params_are_invalid_params_errors(in_daemon: Any, project: Path) -> None:
    async def body(d: Daemon) -> list[RpcError]:
        errors = []
        for method, params in ((methods.runs, {"limit": "ten"}), (methods.log, {}),
                               (methods.log, {"id": 10**6}), (methods.why, {"path": "/nowhere"}),
                               (methods.pause, {"path": "/nowhere"}),
                               (methods.add, {"path": str(project / "missing")}),
                               (methods.add, {"path": str(project / "group-0" / "sample-000" / "raw")})):
            with pytest.raises(RpcError) as caught:
                await method(d, params)
            errors.append(caught.value)
        return errors

    errors = in_daemon(body, projects=(project,))
    assert {e.code for e in errors} == {INVALID_PARAMS}
    assert "limit" in errors[0].message and "'id'" in errors[1].message
    assert errors[5].message == f"{project / 'missing'} does not exist"
    assert "is not a Thot project" in errors[6].message


def test_out_of_range_numbers_are_invalid_params_not_internal_errors(in_daemon: Any) -> None:
    """A huge ``log`` id overflowed SQLite's integers: "internal error" (issue 11, item 10).
    Asked on the real socket, every out-of-range number is a parameter error naming it."""
    import asyncio
    import json

    async def ask(d: Daemon, method: str, params: str) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(os.fspath(d.socket_path))
        try:
            line = f'{{"jsonrpc": "2.0", "id": 1, "method": "{method}", "params": {params}}}\n'
            writer.write(line.encode())
            await writer.drain()
            return dict(json.loads(await reader.readline())["error"])
        finally:
            writer.close()
            await writer.wait_closed()

    async def body(d: Daemon) -> list[dict[str, Any]]:
        return [await ask(d, "log", f'{{"id": {10**30}}}'),
                await ask(d, "log", f'{{"id": -{10**19}}}'),
                await ask(d, "runs", f'{{"limit": {2**63}}}'),
                await ask(d, "log", '{"id": true}'),
                await ask(d, "wait", '{"timeout": Infinity}')]

    errors = in_daemon(body)
    assert [e["code"] for e in errors] == [INVALID_PARAMS] * len(errors), errors
    assert "parameter 'id' is out of range" in errors[0]["message"]
    assert "'limit' is out of range" in errors[2]["message"]
    assert "'id' must be int" in errors[3]["message"]
    assert "'timeout' must be a finite number" in errors[4]["message"]


def test_pause_holds_new_runs_and_resume_releases_them(in_daemon: Any, project: Path) -> None:
    async def body(d: Daemon) -> tuple[Any, ...]:
        await wait_quiet(d)
        paused = await methods.pause(d, {"path": str(project)})
        add_sample(project, "group-0", "sample-002")
        await wait_quiet(d)  # quiet counts a paused queue as quiet
        held = (await methods.status(d, {}))["projects"][0]
        persisted = d.store.projects()[0]["paused"]
        resumed = await methods.resume(d, {})
        await wait_quiet(d)
        return paused, held, persisted, resumed, (await methods.runs(d, {"limit": 100}))["runs"]

    paused, held, persisted, resumed, runs = in_daemon(body, projects=(project,))
    assert paused == {"paused": [str(project)]} and resumed == {"resumed": [str(project)]}
    assert held["paused"] is True and persisted
    assert held["queued"] and held["counts"] == {"ok": RUNS}  # nothing ran while paused
    # then the new sample ran, and so did the group and the summary it feeds
    assert len(runs) == RUNS + 3 and {r["status"] for r in runs} == {"ok"}


def test_rerun_runs_an_up_to_date_run_again(in_daemon: Any, project: Path) -> None:
    async def body(d: Daemon) -> tuple[Any, Any]:
        await wait_quiet(d)
        queued = await methods.rerun(d, {"path": _sample_run(project)})
        await wait_quiet(d)
        return queued, (await methods.runs(d, {"limit": 100}))["runs"]

    queued, runs = in_daemon(body, projects=(project,))
    assert [q["container"] for q in queued["queued"]] == [_sample_run(project)]
    assert len(runs) > RUNS
    assert runs[-RUNS - 1]["container"] == _sample_run(project)  # the first run after start-up


def test_why_names_the_run_that_made_an_output(in_daemon: Any, project: Path) -> None:
    async def body(d: Daemon) -> tuple[Any, Any]:
        await wait_quiet(d)
        proj = d.projects[str(project)]
        assert proj.index is not None
        summary = next(n.file for n in proj.index.nodes.values()
                       if n.kind == "asset" and n.props.get("type") == "summary")
        assert summary is not None
        return await methods.why(d, {"path": summary}), await methods.plan(d, {})

    info, plan = in_daemon(body, projects=(project,))
    [run] = info["runs"]
    assert run["container"] == str(project)
    assert os.path.basename(run["script"]) == "summary.py"
    assert run["status"] == "ok" and run["stale"] == []
    assert plan == {"plan": []}  # everything is up to date


def test_files_the_original_accepts_warn_in_status_and_do_not_block(in_daemon: Any,
                                                                     project: Path) -> None:
    """A folder holding both object files, a ``name`` that is a number: the original Thot
    accepted both, so they are warnings a person sees in ``status``, not blocked runs."""
    both = project / "group-0" / "odd"
    both.mkdir()
    (both / "_container.json").write_text("{}")
    (both / "_asset.json").write_text('{"file": "x.csv"}')
    sample = project / "group-0" / "sample-001" / "_container.json"
    sample.write_text('{"type": "sample", "name": 5}')

    async def body(d: Daemon) -> dict[str, Any]:
        await wait_quiet(d)
        result: dict[str, Any] = await methods.status(d, {})
        return result

    st = in_daemon(body, projects=(project,))
    (proj,) = st["projects"]
    warnings = "\n".join(proj["warnings"])
    assert f"{both}: holds both _container.json and _asset.json" in warnings
    assert str(sample) in warnings and "name" in warnings
    assert proj["blocked"] == [] and proj["invalid"] == []
    assert proj["counts"] == {"ok": RUNS}
