"""Every run's log ends with how the run ended: exit status, duration, outputs -- written
once where a run completes, so the same for ``thot run`` and the daemon."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corekit import make_gs, make_tree, run_json
from inprocess import call

FOOTER = re.compile(r"^# thotd: (?P<how>.+) after (?P<secs>\d+\.\d\d) s; outputs: (?P<outputs>.+)$")


def footer(log: str) -> dict[str, str]:
    last = Path(log).read_text().splitlines()[-1]
    found = FOOTER.match(last)
    assert found, f"no footer at the end of {log}: {last!r}"
    return found.groupdict()


def test_thot_run_logs_end_with_status_duration_and_outputs(tmp_path: Path, state: Path) -> None:
    project = make_gs(tmp_path / "work", 1, 1)
    code, report = run_json(state, project)
    assert code == 0, report
    ends = {os.path.basename(r["script"]): footer(r["log"]) for r in report["runs"]}
    assert {name: (e["how"], e["outputs"]) for name, e in ends.items()} == {
        "sample.py": ("exit 0 (ok)", "group-0/sample-000/stats"),
        "group.py": ("exit 0 (ok)", "group-0/group_stats"),
        "summary.py": ("exit 0 (ok)", "summary"),
    }
    assert all(float(e["secs"]) > 0 for e in ends.values())


def test_a_failed_run_says_so_on_a_line_of_its_own(tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path / "analysis", {
        "boom.py": "import sys\nsys.stdout.write('half a line')\nraise SystemExit(3)\n"})
    root = make_tree(tmp_path / "proj", {
        "_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/boom.py"}]})
    code, report = run_json(state, root)
    assert code == 1
    log = report["runs"][0]["log"]
    assert Path(log).read_text().splitlines()[-2] == "half a line"
    assert footer(log)["how"] == "exit 3 (failed)" and footer(log)["outputs"] == "none"


def test_daemon_run_logs_end_the_same_way(in_daemon: Callable[..., Any], gs: Path) -> None:
    async def body(daemon: Any) -> list[dict[str, Any]]:
        await call(daemon, "add", {"path": str(gs)})
        assert (await call(daemon, "wait", {"timeout": 120}))["quiet"]
        return list((await call(daemon, "runs", {"limit": 100}))["runs"])

    runs = in_daemon(body)
    assert len(runs) == 3 * 3 + 3 + 1
    for run in runs:
        assert footer(run["log"])["how"] == "exit 0 (ok)"
    summary = next(r for r in runs if r["script"].endswith("summary.py"))
    assert footer(summary["log"])["outputs"] == "summary"
