"""``thot run --changed --dry-run`` says what would run now *and* what may follow once its
outputs change -- so that the real run holds no surprise."""

from __future__ import annotations

import json
import os
from pathlib import Path

from corekit import add_sample, cli, make_gs, rel_runs, run_json


def _keys(rows: list[dict[str, str]], root: Path) -> list[tuple[str, str]]:
    return sorted((os.path.relpath(r["container"], root), os.path.basename(r["script"]))
                  for r in rows)


def test_dry_run_lists_what_would_run_and_what_may_follow(tmp_path: Path, state: Path) -> None:
    project = make_gs(tmp_path / "work", 2, 2)
    assert run_json(state, project)[0] == 0
    add_sample(project, "group-1", "sample-new")
    code, out, err = cli("--state", state, "run", "--root", project, "--changed", "--dry-run",
                         "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert _keys(plan["would_run"], project) == [("group-1/sample-new", "sample.py")]
    assert _keys(plan["may_follow"], project) == [(".", "summary.py"), ("group-1", "group.py")]
    group = next(r for r in plan["may_follow"] if r["script"].endswith("group.py"))
    assert group["reasons"] == ["its searches may find what sample.py in group-1/sample-new makes"]
    summary = next(r for r in plan["may_follow"] if r["script"].endswith("summary.py"))
    assert summary["reasons"] == ["it reads group-1/group_stats, made by group.py in group-1"]

    code, out, _ = cli("--state", state, "run", "--root", project, "--changed", "--dry-run")
    lines = out.splitlines()
    assert lines[0].startswith("would run: ") and lines[0].endswith("sample.py in group-1/sample-new")
    assert "may follow: " in out and "    because it reads group-1/group_stats" in out
    assert lines[-1] == ("1 of 8 runs would run, 2 more may follow if their inputs change "
                         "(their inputs are made by runs above)")

    code, report = run_json(state, project, "--changed")  # the real run: exactly those
    assert code == 0
    assert rel_runs(report, project) == sorted([("group-1/sample-new", "sample.py"),
                                                ("group-1", "group.py"), (".", "summary.py")])


def test_nothing_follows_a_run_nobody_reads(tmp_path: Path, state: Path) -> None:
    project = make_gs(tmp_path / "work", 1, 1)
    assert run_json(state, project)[0] == 0
    summary = tmp_path / "work" / "analysis" / "summary.py"
    summary.write_text(summary.read_text() + "\n# edited\n")
    code, out, _ = cli("--state", state, "run", "--root", project, "--changed", "--dry-run",
                       "--json")
    plan = json.loads(out)
    assert _keys(plan["would_run"], project) == [(".", "summary.py")]
    assert plan["may_follow"] == []
