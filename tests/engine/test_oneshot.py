"""The one-shot runner (`thot run`, `python -m thot.runner`): order, failures, blocking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from corekit import make_tree, run_json


def log_script(log: Path, extra: str = "") -> str:
    """A script (no library use) that appends '<container> <script name>' to ``log``."""
    return (
        "import os\n"
        f"{extra}"
        f"with open({str(log)!r}, 'a') as fh:\n"
        "    fh.write('%s %s\\n' % (os.environ['THOT_CONTAINER_ID'],"
        " os.path.basename(os.environ['THOT_SCRIPT_ID'])))\n"
    )


def read_log(log: Path) -> list[tuple[str, str]]:
    if not log.exists():
        return []
    return [tuple(line.split(" ")) for line in log.read_text().splitlines()]  # type: ignore[misc]


def assert_children_first(order: list[tuple[str, str]]) -> None:
    """Every container's runs come after every run of the containers below it."""
    pos: dict[str, list[int]] = {}
    for i, (container, _) in enumerate(order):
        pos.setdefault(container, []).append(i)
    for parent, ppos in pos.items():
        for child, cpos in pos.items():
            if child != parent and child.startswith(parent + os.sep):
                assert max(cpos) < min(ppos), f"{child} ran after its ancestor {parent}"


def tree_with_log(tmp_path: Path, shape: dict[str, Any]) -> tuple[Path, Path]:
    """``shape``: nested dict of container names; every container runs log.py."""
    log = tmp_path / "order.log"
    make_tree(tmp_path / "analysis", {"log.py": log_script(log)})

    def spec(sub: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "_container.json": {},
            "_scripts.json": [{"script": "root:/../analysis/log.py"}],
        }
        for name, kids in sub.items():
            out[name] = spec(kids)
        return out

    root = make_tree(tmp_path / "proj", spec(shape))
    return root, log


SHAPE = {"b": {"b2": {}, "b1": {"x": {}}}, "a": {}, "c": {"c1": {}}}


def test_children_before_parents_depth_first(tmp_path: Path, state: Path) -> None:
    root, log = tree_with_log(tmp_path, SHAPE)
    code, report = run_json(state, root)
    assert code == 0
    order = read_log(log)
    assert [os.path.relpath(c, root) for c, _ in order] == [
        "a", "b/b1/x", "b/b1", "b/b2", "b", "c/c1", "c", "."]
    assert [r["container"] for r in report["runs"]] == [c for c, _ in order]


def test_priority_order_and_autorun(tmp_path: Path, state: Path) -> None:
    log = tmp_path / "order.log"
    scripts = {f"{n}.py": log_script(log) for n in ("late", "tie1", "tie2", "zero", "manual")}
    make_tree(tmp_path / "analysis", scripts)
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": [
            {"script": "root:/../analysis/late.py", "priority": 5},
            {"script": "root:/../analysis/tie1.py", "priority": 1},
            {"script": "root:/../analysis/manual.py", "priority": -3, "autorun": False},
            {"script": "root:/../analysis/tie2.py", "priority": 1},
            {"script": "root:/../analysis/zero.py"},
        ],
    })
    code, report = run_json(state, root)
    assert code == 0
    assert [s for _, s in read_log(log)] == ["zero.py", "tie1.py", "tie2.py", "late.py"]
    assert report["considered"] == 4
    assert all("manual" not in r["script"] for r in report["runs"])


def test_failing_script_is_reported_and_the_rest_runs(tmp_path: Path, state: Path) -> None:
    log = tmp_path / "order.log"
    make_tree(tmp_path / "analysis", {
        "ok.py": log_script(log),
        "boom.py": log_script(log, extra="") + "raise RuntimeError('boom on purpose')\n",
    })
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": [{"script": "root:/../analysis/ok.py"}],
        "a": {"_container.json": {}, "_scripts.json": [
            {"script": "root:/../analysis/boom.py"}, {"script": "root:/../analysis/ok.py"}]},
        "b": {"_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/ok.py"}]},
    })
    code, report = run_json(state, root)
    assert code == 1
    statuses = {(os.path.relpath(r["container"], root), os.path.basename(r["script"])): r
                for r in report["runs"]}
    failed = statuses[("a", "boom.py")]
    assert failed["status"] == "failed" and failed["exit_code"] == 1
    assert "boom on purpose" in Path(failed["log"]).read_text()
    assert report["counts"] == {"ok": 3, "failed": 1}
    assert [(os.path.relpath(c, root), s) for c, s in read_log(log)] == [
        ("a", "boom.py"), ("a", "ok.py"), ("b", "ok.py"), (".", "ok.py")]


def test_text_report_and_exit_status(tmp_path: Path, state: Path) -> None:
    from corekit import cli

    make_tree(tmp_path / "analysis", {"boom.py": "raise SystemExit(3)\n"})
    root = make_tree(tmp_path / "proj", {
        "_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/boom.py"}]})
    code, out, _ = cli("--state", state, "run", "--root", root)
    assert code == 1
    assert "failed" in out and "boom.py" in out and "1 of 1 runs: 1 failed" in out


def test_broken_object_file_blocks_the_runs_that_would_see_it(tmp_path: Path, state: Path) -> None:
    root, log = tree_with_log(tmp_path, {"g1": {"s1": {}, "s2": {}}, "g2": {"s3": {}}})
    (root / "g1" / "s2" / "_container.json").write_text('{"type": ')
    code, report = run_json(state, root)
    assert code == 1
    ran = sorted(os.path.relpath(c, root) for c, _ in read_log(log))
    assert ran == ["g1/s1", "g2", "g2/s3"]
    blocked = sorted(os.path.relpath(r["container"], root) for r in report["runs"]
                     if r["status"] == "blocked")
    assert blocked == [".", "g1", "g1/s2"]
    reason = next(r for r in report["runs"] if r["status"] == "blocked")["reasons"][0]
    assert "g1/s2/_container.json" in reason
    assert report["invalid"][0]["file"] == str(root / "g1" / "s2" / "_container.json")


def test_runs_below_a_broken_container_wait_for_the_fix(tmp_path: Path, state: Path) -> None:
    """They would inherit metadata from a container whose file cannot be read."""
    root, log = tree_with_log(tmp_path, {"g1": {"s1": {}}, "g2": {"s2": {}}})
    container = root / "g1" / "_container.json"
    container.write_text('{"metadata": {"temperature": ')
    code, report = run_json(state, root)
    assert code == 1
    ran = sorted(os.path.relpath(c, root) for c, _ in read_log(log))
    assert ran == ["g2", "g2/s2"]
    blocked = sorted(os.path.relpath(r["container"], root) for r in report["runs"]
                     if r["status"] == "blocked")
    assert blocked == [".", "g1", "g1/s1"]
    container.write_text('{"metadata": {"temperature": 20}}')
    code, report = run_json(state, root, "--changed")
    assert code == 0
    assert sorted(os.path.relpath(r["container"], root) for r in report["runs"]) == [".", "g1", "g1/s1"]


def test_jobs_2_keeps_children_before_parents(tmp_path: Path, state: Path) -> None:
    shape = {f"g{g}": {f"s{s}": {"raw": {}} for s in range(3)} for g in range(3)}
    root, log = tree_with_log(tmp_path, shape)
    code, report = run_json(state, root, "--jobs", "2")
    assert code == 0, report
    order = read_log(log)
    assert len(order) == 1 + 3 + 9 + 9
    assert_children_first(order)
    assert order[-1][0] == str(root)


def test_jobs_2_priority_within_a_container(tmp_path: Path, state: Path) -> None:
    log = tmp_path / "order.log"
    make_tree(tmp_path / "analysis", {f"p{i}.py": log_script(log) for i in range(4)})
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": [{"script": f"root:/../analysis/p{i}.py", "priority": 3 - i}
                          for i in range(4)],
    })
    code, _ = run_json(state, root, "--jobs", "2")
    assert code == 0
    assert [s for _, s in read_log(log)] == ["p3.py", "p2.py", "p1.py", "p0.py"]


def test_json_report_shape(tmp_path: Path, state: Path) -> None:
    root, _ = tree_with_log(tmp_path, {"a": {}})
    code, report = run_json(state, root)
    assert code == 0
    assert set(report) == {"runs", "counts", "considered", "elapsed_s", "invalid"}
    assert report["counts"] == {"ok": 2}
    assert report["considered"] == 2
    assert report["invalid"] == []
    assert isinstance(report["elapsed_s"], float)
    run = report["runs"][0]
    assert set(run) == {"container", "script", "status", "exit_code", "duration_s", "log",
                        "reasons", "message"}
    assert run["container"] == str(root / "a")
    assert run["script"] == str(tmp_path / "analysis" / "log.py")
    assert run["status"] == "ok" and run["exit_code"] == 0
    assert run["reasons"] == ["full run"]
    assert Path(run["log"]).is_file()
    json.dumps(report)


def test_python_m_thot_runner(tmp_path: Path, state: Path) -> None:
    root, log = tree_with_log(tmp_path, {"a": {}})
    env = {k: v for k, v in os.environ.items() if not k.startswith("THOT")}
    proc = subprocess.run(
        [sys.executable, "-m", "thot.runner", "--root", str(root), "--json"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**env, "XDG_STATE_HOME": str(tmp_path / "xdg-state")},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["counts"] == {"ok": 2}
    assert [os.path.relpath(c, root) for c, _ in read_log(log)] == ["a", "."]


def test_state_flag_comes_before_the_command_for_python_m(tmp_path: Path, state: Path) -> None:
    root, log = tree_with_log(tmp_path, {})
    proc = subprocess.run(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root", str(root)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert state.exists()
    assert len(read_log(log)) == 1


def test_missing_script_is_an_error_and_the_rest_runs(tmp_path: Path, state: Path) -> None:
    root, log = tree_with_log(tmp_path, {"a": {}})
    (root / "a" / "_scripts.json").write_text(json.dumps(
        [{"script": "nowhere.py"}, {"script": "root:/../analysis/log.py"}]))
    code, report = run_json(state, root)
    assert code == 1
    assert [r["status"] for r in report["runs"]] == ["error", "ok", "ok"]
    assert "nowhere.py" in report["runs"][0]["message"]
    assert len(read_log(log)) == 2


def test_ctrl_c_stops_the_running_script_and_records_it(tmp_path: Path) -> None:
    """Scripts run in sessions of their own, so a terminal's Ctrl-C reaches only `thot`; it
    must stop the script itself, record the run as killed and exit 130."""
    import signal
    import time

    from thotd.engine.state import Store

    pidfile = tmp_path / "script.pid"
    project = make_tree(tmp_path / "p", {
        "_container.json": {},
        "_scripts.json": [{"script": "slow.py"}],
        "slow.py": (f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\n"
                    "time.sleep(120)\n"),
    })
    state = tmp_path / "state.sqlite3"
    thot = subprocess.Popen(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root", str(project)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not pidfile.exists() or not pidfile.read_text():
            assert thot.poll() is None, thot.communicate()
            assert time.monotonic() < deadline, "the script never started"
            time.sleep(0.02)
        script_pid = int(pidfile.read_text())
        thot.send_signal(signal.SIGINT)
        out, err = thot.communicate(timeout=60)
    finally:
        if thot.poll() is None:
            thot.kill()
    assert thot.returncode == 130, (out, err)
    deadline = time.monotonic() + 30
    while True:  # the script is gone (its group got TERM, then KILL after the grace)
        try:
            os.kill(script_pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "the script outlived thot"
        time.sleep(0.05)
    rows = Store(state).runs(str(project))
    assert [r.status for r in rows.values()] == ["killed"]


def test_python_scripts_are_forked_unless_told_not_to(tmp_path: Path) -> None:
    """`thot run` forks Python scripts from a preloaded interpreter (the library is already
    imported before the script's first line); `--no-fork` starts a fresh one for each."""
    out = tmp_path / "seen.txt"
    project = make_tree(tmp_path / "p", {
        "_container.json": {},
        "_scripts.json": [{"script": "probe.py"}],
        "probe.py": ("import sys\n"
                     f"open({str(out)!r}, 'a').write(str('thot.thot' in sys.modules) + '\\n')\n"),
    })
    for extra in ([], ["--no-fork"]):
        done = subprocess.run(
            [sys.executable, "-m", "thotd.cli.thot", "--state", str(tmp_path / "s.sqlite3"), "run",
             "--root", str(project), *extra], capture_output=True, text=True, timeout=120,
            check=False)
        assert done.returncode == 0, done.stderr
    assert out.read_text().split() == ["True", "False"]
