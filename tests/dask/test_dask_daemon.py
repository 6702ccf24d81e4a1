"""The daemon with the ``dask`` executor on a real cluster (a scheduler and two workers as
processes of their own): the same results as the local executor, only what changed reruns,
faults (a worker killed, the scheduler restarted) lose and double nothing, a worker that
cannot see the project is reported and not used."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from corekit import add_sample, derived_assets, make_gs, oracle, wait_for
from daemonkit import Daemon, make_daemon
from daskkit import Cluster

pytestmark = pytest.mark.timeout(300)


def dask_daemon(tmp_path: Path, cluster: Cluster, **config: dict[str, Any]):  # type: ignore[no-untyped-def]
    return make_daemon(tmp_path, executor={"kind": "dask", "scheduler": cluster.address},
                       pool={"workers": 4}, **config)


def executor_status(d: Daemon) -> dict[str, Any]:
    (status,) = d.status()["executors"]
    return status


def ran_on(d: Daemon) -> list[str]:
    """The worker named in each finished run's log (the dask executor writes it there)."""
    out = []
    for run in d.runs():
        text = Path(run["log"]).read_text(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("# thotd: ran on Dask")), "")
        out.append(line.split()[6] if line else "")
    return out


def slow_group_script(project: Path, seconds: float) -> None:
    """Make the G×S project's group script take ``seconds`` (its outputs are unchanged)."""
    script = project.parent / "analysis" / "group.py"
    script.write_text(f"import time\ntime.sleep({seconds})\n" + script.read_text())


def test_full_run_then_new_sample_equal_local(tmp_path: Path, two_workers: Cluster) -> None:
    work = tmp_path / "work"
    project = make_gs(work / "gs", 2, 3)
    with dask_daemon(tmp_path, two_workers) as d:
        d.start()
        d.add(project)
        runs = d.runs()
        assert len(runs) == 2 * 3 + 2 + 1 and {r["status"] for r in runs} == {"ok"}, runs
        assert all(w.startswith("tcp://127.0.0.1:") for w in ran_on(d)), "a run ran locally"
        assert derived_assets(project) == oracle(work, os.path.relpath(project, work), tmp_path / "oracle")

        add_sample(project, "group-1", "sample-new", index=99)
        d.wait_quiet()
        fresh = [(Path(r["container"]).name, Path(r["script"]).name) for r in d.runs()[:-len(runs)]]
        assert sorted(fresh) == sorted([("sample-new", "sample.py"), ("group-1", "group.py"),
                                        (project.name, "summary.py")]), fresh
        assert derived_assets(project) == oracle(work, os.path.relpath(project, work), tmp_path / "oracle")
        st = executor_status(d)
        assert st["connected"] and not st["excluded"], st


def test_worker_killed_mid_run_loses_and_doubles_nothing(tmp_path: Path, two_workers: Cluster) -> None:
    from distributed import Client

    work = tmp_path / "work"
    project = make_gs(work / "gs", 2, 2)
    slow_group_script(project, 4)
    with dask_daemon(tmp_path, two_workers) as d:
        d.start()
        d.add(project, wait=False)

        def busy_worker() -> str | None:
            with Client(two_workers.address, timeout=5) as c:
                names = {a: w["name"] for a, w in c.scheduler_info()["workers"].items()}
                busy = [names[a] for a, keys in c.processing().items() if keys]
            return busy[0] if busy else None

        # a group run is running on some worker: kill that worker with -9
        wait_for(lambda: any(Path(r["script"]).name == "group.py" and r["status"] == "running"
                             for r in d.rpc("runs", {"limit": 100})["runs"]), 60, "a group run")
        victim = wait_for(busy_worker, 30, "a busy worker")
        two_workers.kill_worker(victim)
        d.wait_quiet()
        runs = d.runs()
        keys = [(r["container"], r["script"]) for r in runs]
        assert len(keys) == len(set(keys)) == 2 * 2 + 2 + 1, runs  # each run recorded once
        assert {r["status"] for r in runs} == {"ok"}, runs
        assert derived_assets(project) == oracle(work, os.path.relpath(project, work), tmp_path / "oracle")


def test_scheduler_restart_runs_wait_then_recover(tmp_path: Path, two_workers: Cluster) -> None:
    work = tmp_path / "work"
    project = make_gs(work / "gs", 1, 2)
    with dask_daemon(tmp_path, two_workers) as d:
        d.start()
        d.add(project)
        two_workers.stop_scheduler()
        wait_for(lambda: not executor_status(d)["connected"], 60, "the daemon to see the loss")
        add_sample(project, "group-0", "sample-late", index=77)
        wait_for(lambda: executor_status(d)["waiting"] >= 1, 60, "a run waiting for the scheduler")
        t0 = time.monotonic()
        st = d.status()  # still answering, at once
        assert time.monotonic() - t0 < 2
        assert "unreachable" in (st["executors"][0]["reason"] or ""), st["executors"]
        for name in list(two_workers.workers):
            two_workers.stop_worker(name)  # workers leave with their scheduler
        two_workers.start_scheduler()
        two_workers.start_worker("w1")
        two_workers.start_worker("w2")
        d.wait_quiet()
        assert {r["status"] for r in d.runs()} == {"ok"}
        assert derived_assets(project) == oracle(work, os.path.relpath(project, work), tmp_path / "oracle")
        assert executor_status(d)["connected"]


def test_worker_that_cannot_see_the_project_is_reported_and_unused(
        tmp_path: Path, two_workers: Cluster) -> None:
    if os.geteuid() != 0 or not any(
            os.access(os.path.join(p, "unshare"), os.X_OK) for p in os.environ["PATH"].split(":")):
        pytest.skip("needs root and unshare(1) for a worker with a mount namespace of its own")
    from distributed import Client

    work = tmp_path / "work"
    project = make_gs(work / "gs", 2, 2)
    two_workers.start_worker("hidden", hidden=work)  # a tmpfs over work/: nothing there
    try:
        with Client(two_workers.address, timeout=5) as c:
            hidden = next(a for a, w in c.scheduler_info()["workers"].items() if w["name"] == "hidden")
        with dask_daemon(tmp_path, two_workers) as d:
            d.start()
            d.add(project)
            st = executor_status(d)
            assert [(e["project"], e["worker"]) for e in st["excluded"]] == [(str(project), hidden)]
            assert "cannot read" in st["excluded"][0]["reason"]
            assert str(project) in st["excluded"][0]["reason"]
            assert hidden not in ran_on(d)
            assert {r["status"] for r in d.runs()} == {"ok"}
            assert derived_assets(project) == oracle(work, os.path.relpath(project, work), tmp_path / "oracle")
            out = d.ctl("status")
            assert hidden in out.stdout and str(project) in out.stdout, out.stdout
    finally:
        two_workers.stop_worker("hidden")

