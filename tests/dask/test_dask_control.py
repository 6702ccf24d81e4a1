"""Stopping remote runs (timeout, ``thotctl remove``, ``thotd stop``: the task is cancelled and
the worker stops the script's process group), following a remote run's log while it runs,
and the ``_scripts.json`` extensions ``resources`` and ``"executor": "local"``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corekit import make_tree, wait_for
from daemonkit import make_daemon
from daskkit import Cluster
from test_dask_daemon import dask_daemon, ran_on

pytestmark = pytest.mark.timeout(300)

SLOW = """import os, sys, time
from thot import ThotProject
db = ThotProject()
open(os.environ['PIDFILE'], 'w').write(str(os.getpid()))
print('started', flush=True)
time.sleep(300)
"""


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def slow_project(tmp_path: Path, pidfile: Path) -> Path:
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    (analysis / "slow.py").write_text(SLOW.replace("os.environ['PIDFILE']", repr(str(pidfile))))
    return make_tree(tmp_path / "proj", {"_container.json": {"name": "p"},
                                         "_scripts.json": [{"script": str(analysis / "slow.py")}]})


@pytest.mark.parametrize("how", ["remove", "stop", "timeout"])
def test_stopping_a_remote_run_kills_its_script(tmp_path: Path, two_workers: Cluster, how: str) -> None:
    pidfile = tmp_path / "pid"
    project = slow_project(tmp_path, pidfile)
    pool = {"workers": 2, "timeout_s": 3.0} if how == "timeout" else {"workers": 2}
    with make_daemon(tmp_path, executor={"kind": "dask", "scheduler": two_workers.address},
                     pool=pool) as d:
        d.start()
        d.add(project, wait=False)
        wait_for(lambda: pidfile.exists() and pidfile.read_text(), 60, "the script to start")
        pid = int(pidfile.read_text())
        # the log streams in while the run lasts (thotctl logs -f reads this file)
        run = wait_for(lambda: next(iter(d.rpc("runs", {"limit": 5})["runs"]), None), 30, "run row")
        log = Path(run["log"])
        wait_for(lambda: log.exists() and "started" in log.read_text(errors="replace"), 30,
                 "the remote log to stream in")
        assert alive(pid)
        if how == "remove":
            d.ctl("remove", str(project))
        elif how == "stop":
            d.stop()
        wait_for(lambda: not alive(pid), 60, "the worker to stop the script")
        if how == "timeout":
            d.wait_quiet(60)
            assert [r["status"] for r in d.runs()] == ["timeout"]


def test_resources_and_local_scripts(tmp_path: Path, two_workers: Cluster) -> None:
    from distributed import Client

    analysis = tmp_path / "analysis"
    analysis.mkdir()
    for name in ("gpu.py", "home.py", "any.py"):
        (analysis / name).write_text("from thot import ThotProject\nThotProject()\nprint('hi')\n")
    project = make_tree(tmp_path / "proj", {
        "_container.json": {"name": "p"},
        "_scripts.json": [
            {"script": str(analysis / "gpu.py"), "resources": {"GPU": 1, "memory": "1GB"}},
            {"script": str(analysis / "home.py"), "executor": "local"},
            {"script": str(analysis / "any.py")},
        ]})
    two_workers.start_worker("gpu", resources="GPU=1,memory=2e9")
    try:
        with Client(two_workers.address, timeout=5) as c:
            gpu = next(a for a, w in c.scheduler_info()["workers"].items() if w["name"] == "gpu")
        with dask_daemon(tmp_path, two_workers) as d:
            d.start()
            d.add(project)
            runs = {Path(r["script"]).name: r for r in d.runs()}
            assert {r["status"] for r in runs.values()} == {"ok"}, runs
            where = dict(zip([Path(r["script"]).name for r in d.runs()], ran_on(d), strict=True))
            assert where["gpu.py"] == gpu
            assert where["home.py"] == ""  # ran here: no Dask line in its log
            assert where["any.py"].startswith("tcp://")
    finally:
        two_workers.stop_worker("gpu")


def test_bad_resources_are_an_object_file_error(tmp_path: Path) -> None:
    from thotd.project.objectfile import ObjectFileError, load

    with pytest.raises(ObjectFileError):
        load("_scripts.json", json.dumps([{"script": "a.py", "executor": "cloud"}]).encode())
    with pytest.raises(ObjectFileError):
        load("_scripts.json", json.dumps([{"script": "a.py", "resources": {"GPU": [1]}}]).encode())
