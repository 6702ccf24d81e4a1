"""Scripts under ``thot run`` ask the runner's index over a socket; answers equal a disk walk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

from gen import make_gs  # noqa: E402

DUMP = (
    "import json, os\nfrom thot import ThotProject\n"
    "db = ThotProject()\n"
    "out = {'raw': db.find_assets({'type': 'raw'}),"
    " 'samples': db.find_containers({'type': 'sample', 'metadata.sample': {'$lte': 1}}),"
    " 'socket': bool(os.environ.get('THOTD_QUERY_SOCKET'))}\n"
    "open(os.path.join(os.environ['DUMP_DIR'], os.path.basename(db.root) + '.json'), 'w')"
    ".write(json.dumps(out, sort_keys=True))\n"
)


def _project(tmp_path: Path) -> Path:
    project = make_gs(tmp_path / "work", 2, 2)
    (project.parent / "analysis" / "dump.py").write_text(DUMP)
    (project / "group-0" / "_scripts.json").write_text(json.dumps(
        [{"script": "root:/../analysis/group.py"}, {"script": "root:/../analysis/dump.py", "priority": 1}]))
    return project


def _run(project: Path, state: Path, dump: Path, **env: str) -> None:
    dump.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root", str(project)],
        env={**os.environ, "DUMP_DIR": str(dump), **env}, capture_output=True, text=True,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_runner_answers_equal_a_disk_walk(tmp_path: Path) -> None:
    project = _project(tmp_path)
    _run(project, tmp_path / "s.sqlite", tmp_path / "served")
    served = json.loads((tmp_path / "served" / "group-0.json").read_text())
    assert served.pop("socket") is True
    env = {**os.environ, "THOT_CONTAINER_ID": str(project / "group-0"), "DUMP_DIR": str(tmp_path)}
    env.pop("THOTD_QUERY_SOCKET", None)
    subprocess.run([sys.executable, str(project.parent / "analysis" / "dump.py")], env=env, check=True)
    walked = json.loads((tmp_path / "group-0.json").read_text())
    assert walked.pop("socket") is False
    assert served == walked and len(served["raw"]) == 2


def test_runner_without_a_socket_still_runs(tmp_path: Path) -> None:
    """A $TMPDIR too long for a socket path: scripts walk the disk instead."""
    long_tmp = tmp_path / ("x" * 90)
    long_tmp.mkdir()
    project = _project(tmp_path)
    _run(project, tmp_path / "s.sqlite", tmp_path / "walked", TMPDIR=str(long_tmp))
    walked = json.loads((tmp_path / "walked" / "group-0.json").read_text())
    assert walked.pop("socket") is False
    assert (project / "summary" / "summary.txt").exists()
