"""A project registered with ``cluster = "slurm"`` runs its scripts inside Slurm jobs
(through ``dask-jobqueue``) with the same results as local: a real single-node Slurm
(:mod:`slurmkit`), a real daemon (:mod:`daemonkit`)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import slurmkit
from corekit import derived_assets, make_gs, missing, oracle
from daemonkit import make_daemon
from daskkit import REPO

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[slurmkit.Slurm]:
    gone = slurmkit.missing()
    if gone:
        missing(f"Slurm is not installed ({', '.join(gone)}): apt-get install slurm-wlm munge")
    if os.geteuid() != 0:
        pytest.skip("starting munged and slurmd needs root")
    s = slurmkit.Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


def test_slurm_cluster_runs_scripts_in_slurm_jobs(tmp_path: Path, slurm: slurmkit.Slurm) -> None:
    work = tmp_path / "work"
    project = make_gs(work / "gs", 1, 2)
    summary = project.parent / "analysis" / "summary.py"  # says which job it ran in
    summary.write_text("import os\nprint('SLURM_JOB_ID', os.environ.get('SLURM_JOB_ID'))\n"
                       + summary.read_text())
    options = {
        "cores": 1, "processes": 1, "memory": "500MB", "walltime": "00:20:00",
        "python": sys.executable, "log_directory": str(tmp_path / "slurm-logs"),
        "local_directory": str(tmp_path / "dask-local"),
        "job_script_prologue": [f"export PYTHONPATH={REPO}",
                                f"export SLURM_CONF={slurm.conf}"],
        "worker_extra_args": ["--no-dashboard"],
    }
    with make_daemon(tmp_path) as d:
        d.config.write_text(d.config.read_text() + "\n".join([
            "[executor]", 'kind = "dask"', 'cluster = "slurm"', "adapt_min = 1", "adapt_max = 2",
            "[executor.cluster_options]", *(f"{k} = {json.dumps(v)}" for k, v in options.items()),
            "[executor.cluster_options.scheduler_options]", 'host = "127.0.0.1"',
            'dashboard_address = ":0"', ""]))
        d.env["SLURM_CONF"] = str(slurm.conf)
        d.start()
        d.add(project, timeout=300)
        runs = d.runs()
        assert len(runs) == 2 + 1 + 1 and {r["status"] for r in runs} == {"ok"}, runs
        for r in runs:
            assert " in Slurm job " in Path(r["log"]).read_text(), r["log"]
        (top,) = [r for r in runs if Path(r["script"]).name == "summary.py"]
        assert "SLURM_JOB_ID None" not in Path(top["log"]).read_text()
        assert "SLURM_JOB_ID " in Path(top["log"]).read_text()
        assert derived_assets(project) == oracle(work, os.path.relpath(project, work),
                                                 tmp_path / "oracle")
        d.stop()
    # the daemon's stop closed the cluster: its Slurm jobs are gone
    from corekit import wait_for

    wait_for(lambda: not slurm.jobs().strip(), 60, "the cluster's Slurm jobs to end")
