"""Under the daemon, a script starts in the project root -- where the original runner was
started (``python -m thot.runner`` with its default ``-r .``) -- and the script API moves it
into its container, as every original release did."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from corekit import make_tree
from daemonkit import Daemon

PROBES = Path(__file__).resolve().parents[1] / "compat"

_TREE = {
    "_container.json": {},
    "s": {"_container.json": {}, "_scripts.json": [{"script": "../where.py"}]},
}


def test_daemon_scripts_start_in_the_project_root(daemon: Daemon, tmp_path: Path) -> None:
    project = make_tree(tmp_path / "work" / "proj", _TREE)
    shutil.copy(PROBES / "probe_where.py", project / "where.py")
    (project / "data.txt").write_text("relative to the project root\n")
    out = tmp_path / "probe.jsonl"
    daemon.env.update(PROBE_OUT=str(out), PROBE_WORK=str(project))
    daemon.start()
    assert daemon.ctl("add", str(project)).returncode == 0
    daemon.wait_quiet()
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert (record["first"], record["sees_data_first"]) == (".", True)
    assert (record["container"], record["after"]) == ("s", "s")
    assert record["dev_mode"] is False
