"""``thot run --executor dask --scheduler ADDR`` on a real cluster, and the import rule:
the base install and the ``thot`` script API never import ``distributed``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from corekit import cli, derived_assets, make_gs, oracle
from daskkit import REPO, Cluster

pytestmark = pytest.mark.timeout(300)


def test_thot_run_on_dask_equals_local(tmp_path: Path, two_workers: Cluster) -> None:
    import json

    work = tmp_path / "work"
    project = make_gs(work / "gs", 2, 2)
    code, out, err = cli("--state", tmp_path / "state.sqlite3", "run", "--root", project,
                         "--json", "--jobs", "4", "--executor", "dask",
                         "--scheduler", two_workers.address)
    assert code == 0, out + err
    runs = json.loads(out)["runs"]
    assert len(runs) == 2 * 2 + 2 + 1 and {r["status"] for r in runs} == {"ok"}
    for r in runs:
        assert "# thotd: ran on Dask worker tcp://127.0.0.1:" in Path(r["log"]).read_text()
    assert derived_assets(project) == oracle(work, os.path.relpath(project, work), tmp_path / "o")


def test_dask_needs_a_scheduler(tmp_path: Path) -> None:
    project = make_gs(tmp_path / "gs", 1, 1)
    code, _out, err = cli("--state", tmp_path / "s.sqlite3", "run", "--root", project,
                          "--executor", "dask")
    assert code != 0 and "--scheduler" in err


def test_base_modules_do_not_import_distributed() -> None:
    """The daemon, the CLIs and the script API load without ``distributed`` (the dask
    executor is imported only when chosen)."""
    code = ("import sys, thot, thot.thot, thotd.cli.thot, thotd.cli.thotctl, thotd.service.daemon, "
            "thotd.engine.oneshot, thotd.executor.choose, thotd.executor.local; "
            "bad = [m for m in ('distributed', 'dask', 'dask_jobqueue', 'tornado') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
