"""The incremental engine on a real G×S project: exactly the affected runs, for the right
reasons, and nothing for edits that change nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from corekit import (
    add_sample,
    backup_db,
    cli,
    make_gs,
    make_tree,
    rel_runs,
    restore_tree,
    run_json,
)

from thotd.engine.staleness import Engine
from thotd.engine.state import Store
from thotd.project.index import Index

G, S = 3, 3
SAMPLE_RUNS = [(f"group-{g}/sample-{s:03d}", "sample.py") for g in range(G) for s in range(S)]
GROUP_RUNS = [(f"group-{g}", "group.py") for g in range(G)]
ALL_RUNS = sorted([*SAMPLE_RUNS, *GROUP_RUNS, (".", "summary.py")])


@dataclass
class GS:
    work: Path  # holds analysis/ and project/
    project: Path
    state: Path

    @property
    def analysis(self) -> Path:
        return self.work / "analysis"

    def changed(self, *extra: str) -> tuple[int, dict]:
        return run_json(self.state, self.project, "--changed", *extra)

    def ran(self) -> list[tuple[str, str]]:
        code, report = self.changed()
        assert code == 0, report
        return rel_runs(report, self.project, statuses=None)

    def dry(self) -> dict[tuple[str, str], list[str]]:
        code, out, err = cli("--state", self.state, "run", "--root", self.project,
                             "--changed", "--dry-run", "--json")
        assert code == 0, err
        rows = json.loads(out)["would_run"]
        return {(os.path.relpath(r["container"], self.project), os.path.basename(r["script"])):
                r["reasons"] for r in rows}


@pytest.fixture(scope="module")
def gs_baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """A 3×3 project after one full run, saved once: (saved tree, saved state db)."""
    base = tmp_path_factory.mktemp("gs-baseline")
    work = base / "work"
    project = make_gs(work, G, S)
    state = base / "state" / "state.sqlite3"
    state.parent.mkdir()
    code, report = run_json(state, project, "--jobs", "2")
    assert code == 0, report
    assert rel_runs(report, project) == ALL_RUNS
    saved = base / "saved"
    shutil.copytree(work, saved)
    saved_db = base / "saved.sqlite3"
    backup_db(state, saved_db)
    yield saved, saved_db


@pytest.fixture
def gs3(gs_baseline: tuple[Path, Path]) -> GS:
    """The baseline restored at its original path (records hold absolute paths), with a
    copy of its state db: every test starts from 'all up to date'."""
    saved, saved_db = gs_baseline
    work = saved.parent / "work"
    restore_tree(saved, work)
    # a new db file per test: a connection left open by an earlier test can never touch it
    state = Path(tempfile.mkdtemp(dir=saved.parent, prefix="state-")) / "state.sqlite3"
    backup_db(saved_db, state)
    return GS(work, work / "project", state)


# ---------------------------------------------------------------------------- minimality


def test_restored_baseline_is_up_to_date(gs3: GS) -> None:
    assert gs3.dry() == {}
    assert gs3.ran() == []


def test_new_sample_runs_its_script_its_group_and_the_root(gs3: GS) -> None:
    add_sample(gs3.project, "group-1", "sample-003")
    dry = gs3.dry()
    assert dry == {("group-1/sample-003", "sample.py"): ["never ran"]}
    assert gs3.ran() == sorted([("group-1/sample-003", "sample.py"), ("group-1", "group.py"),
                                (".", "summary.py")])
    summary = (gs3.project / "summary" / "summary.txt").read_text()
    assert "samples=10" in summary
    assert gs3.ran() == []


def test_touch_without_change_runs_nothing(gs3: GS) -> None:
    later = 2_000_000_000
    for dirpath, _dirs, files in os.walk(gs3.work):
        for name in files:
            os.utime(Path(dirpath, name), (later, later))
    assert gs3.dry() == {}
    assert gs3.ran() == []


def test_identical_rewrite_runs_nothing(gs3: GS) -> None:
    for path in [gs3.project / "group-0" / "sample-001" / "raw" / "data.csv",
                 gs3.project / "group-0" / "sample-001" / "raw" / "_asset.json",
                 gs3.project / "group-2" / "_container.json",
                 gs3.project / "group-2" / "_scripts.json",
                 gs3.analysis / "group.py"]:
        data = path.read_bytes()
        path.unlink()
        path.write_bytes(data)
    # same content, reformatted JSON: the object did not change either
    cfile = gs3.project / "group-1" / "_container.json"
    cfile.write_text(json.dumps(json.loads(cfile.read_text())))
    assert gs3.ran() == []


def test_changed_data_reruns_its_chain(gs3: GS) -> None:
    data = gs3.project / "group-2" / "sample-001" / "raw" / "data.csv"
    data.write_text("value\n1\n2\n3\n")
    dry = gs3.dry()
    assert dry == {("group-2/sample-001", "sample.py"):
                   ["input group-2/sample-001/raw/data.csv changed"]}
    assert gs3.ran() == sorted([("group-2/sample-001", "sample.py"), ("group-2", "group.py"),
                                (".", "summary.py")])
    stats = (gs3.project / "group-2" / "sample-001" / "stats" / "stats.txt").read_text()
    assert stats == "sample-001 3 2.0\n"


def test_changed_script_runs_exactly_its_runs_and_their_consumers(gs3: GS) -> None:
    script = gs3.analysis / "group.py"
    text = script.read_text()
    marker = "f.write('%s samples=%d sum=%r\\n' % (name, len(stats), total))"
    assert marker in text
    script.write_text(text.replace(marker, marker.replace("sum=%r\\n", "sum=%r v=2\\n")))
    dry = gs3.dry()
    assert dry == {k: ["script changed"] for k in GROUP_RUNS}
    assert gs3.ran() == sorted([*GROUP_RUNS, (".", "summary.py")])
    assert "v=2" in (gs3.project / "summary" / "summary.txt").read_text()
    assert gs3.ran() == []


def test_script_change_with_identical_outputs_stops_the_wave(gs3: GS) -> None:
    script = gs3.analysis / "sample.py"
    script.write_text(script.read_text() + "\n# a comment changes the script, not its output\n")
    assert gs3.ran() == sorted(SAMPLE_RUNS)
    assert gs3.ran() == []


def test_changed_metadata_at_a_group_reruns_what_reads_it(gs3: GS) -> None:
    cfile = gs3.project / "group-1" / "_container.json"
    doc = json.loads(cfile.read_text())
    doc["metadata"]["operator"] = "ada"
    cfile.write_text(json.dumps(doc))
    dry = gs3.dry()
    # everything that read an object below group-1 (they all inherit the metadata), and
    # nothing else
    assert set(dry) == {*((f"group-1/sample-{s:03d}", "sample.py") for s in range(S)),
                        ("group-1", "group.py"), (".", "summary.py")}
    for s in range(S):
        assert dry[(f"group-1/sample-{s:03d}", "sample.py")] == [
            f"input group-1/sample-{s:03d}/raw changed"]
    assert dry[(".", "summary.py")] == ["input group-1/group_stats changed"]
    ran = gs3.ran()
    assert ran == sorted([(f"group-1/sample-{s:03d}", "sample.py") for s in range(S)]
                         + [("group-1", "group.py"), (".", "summary.py")])
    assert gs3.ran() == []


def test_metadata_only_some_runs_read(tmp_path: Path, state: Path) -> None:
    """Two sibling containers, one script reads the group's metadata through a container
    query, the other only its own asset list: a change of an unrelated key elsewhere
    reruns nothing, a change at the group reruns both (both see it)."""
    make_tree(tmp_path / "analysis", {
        "meta.py": (
            "from thot import ThotProject\n"
            "db = ThotProject()\n"
            "c = db.find_container({'_id': db.root})\n"
            "p = db.add_asset({'file': 'm.txt', 'type': 'm'}, 'm')\n"
            "open(p, 'w').write(str(c.metadata.get('unit')))\n"
        ),
    })
    root = make_tree(tmp_path / "proj", {
        "_container.json": {"metadata": {"unit": "mm"}},
        "g": {"_container.json": {}, "a": {"_container.json": {},
                                           "_scripts.json": [{"script": "root:/../analysis/meta.py"}]}},
        "h": {"_container.json": {"metadata": {"x": 1}},
              "b": {"_container.json": {}, "_scripts.json": [{"script": "root:/../analysis/meta.py"}]}},
    })
    code, _ = run_json(state, root, "--changed")
    assert code == 0
    (root / "h" / "_container.json").write_text('{"metadata": {"x": 2}}')
    code, report = run_json(state, root, "--changed")
    assert rel_runs(report, root) == [("h/b", "meta.py")]
    (root / "g" / "_container.json").write_text('{"metadata": {"unit": "cm"}}')
    code, report = run_json(state, root, "--changed")
    assert rel_runs(report, root) == [("g/a", "meta.py")]
    assert (root / "g" / "a" / "m" / "m.txt").read_text() == "cm"
    assert (root / "h" / "b" / "m" / "m.txt").read_text() == "mm"


def test_deleted_sample_reruns_group_and_root(gs3: GS) -> None:
    shutil.rmtree(gs3.project / "group-0" / "sample-002")
    dry = gs3.dry()
    assert list(dry) == [("group-0", "group.py")]
    assert dry[("group-0", "group.py")] == [
        'group-0/sample-002/stats no longer matches {"type": "stats"}']
    assert gs3.ran() == sorted([("group-0", "group.py"), (".", "summary.py")])
    assert "samples=2" in (gs3.project / "group-0" / "group_stats" / "group_stats.txt").read_text()


def test_deleted_output_is_made_again(gs3: GS) -> None:
    shutil.rmtree(gs3.project / "group-1" / "sample-002" / "stats")
    dry = gs3.dry()
    assert dry[("group-1/sample-002", "sample.py")] == ["output group-1/sample-002/stats missing"]
    # the wave stops once the output is back, identical
    assert gs3.ran() == [("group-1/sample-002", "sample.py")]
    assert (gs3.project / "group-1" / "sample-002" / "stats" / "stats.txt").is_file()
    (gs3.project / "summary" / "summary.txt").unlink()
    assert gs3.dry() == {(".", "summary.py"): ["output summary/summary.txt missing"]}
    assert gs3.ran() == [(".", "summary.py")]


def test_two_runs_writing_one_asset_settle(tmp_path: Path, state: Path) -> None:
    """Outputs are not inputs: a run whose asset a later run overwrote is not stale."""
    writer = (
        "import os\n"
        "from thot import ThotProject\n"
        "db = ThotProject()\n"
        "open(db.add_asset({'file': 'o.txt', 'type': 'o'}, 'o'), 'w')"
        ".write(os.path.basename(__file__))\n"
    )
    make_tree(tmp_path / "analysis", {"w1.py": writer, "w2.py": writer})
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": [{"script": "root:/../analysis/w1.py"}, {"script": "root:/../analysis/w2.py"}],
    })
    code, report = run_json(state, root, "--changed")
    assert code == 0 and report["counts"] == {"ok": 2}
    assert (root / "o" / "o.txt").read_text() == "w2.py"
    code, report = run_json(state, root, "--changed")
    assert code == 0 and report["runs"] == []


def test_new_matching_asset_is_a_reason(gs3: GS) -> None:
    sample = gs3.project / "group-2" / "sample-000"
    make_tree(sample / "raw2", {"_asset.json": {"type": "raw", "file": "data.csv"},
                                "data.csv": "value\n5\n"})
    dry = gs3.dry()
    assert dry == {("group-2/sample-000", "sample.py"):
                   ['new asset group-2/sample-000/raw2 matches {"type": "raw"}']}


def test_dry_run_text(gs3: GS) -> None:
    add_sample(gs3.project, "group-0", "sample-009")
    (gs3.analysis / "summary.py").write_text((gs3.analysis / "summary.py").read_text() + "\n#\n")
    code, out, _ = cli("--state", gs3.state, "run", "--root", gs3.project, "--changed", "--dry-run")
    assert code == 0
    assert f"would run: {gs3.analysis / 'sample.py'} in group-0/sample-009" in out
    assert "because never ran" in out
    assert "because script changed" in out
    assert "2 of 14 runs would run" in out
    assert gs3.ran() == sorted([("group-0/sample-009", "sample.py"), ("group-0", "group.py"),
                                (".", "summary.py")])


def test_full_dry_run_lists_everything(gs3: GS) -> None:
    code, out, _ = cli("--state", gs3.state, "run", "--root", gs3.project, "--dry-run", "--json")
    assert code == 0
    rows = json.loads(out)["would_run"]
    assert len(rows) == len(ALL_RUNS) and all(r["reasons"] == ["full run"] for r in rows)


def test_broken_sample_blocks_only_its_chain(gs3: GS) -> None:
    data = gs3.project / "group-1" / "sample-000" / "raw" / "data.csv"
    data.write_text("value\n7\n")
    (gs3.project / "group-1" / "sample-001" / "_container.json").write_text("{")
    code, report = gs3.changed()
    assert code == 1
    assert rel_runs(report, gs3.project, ("ok",)) == [("group-1/sample-000", "sample.py")]
    assert rel_runs(report, gs3.project, ("blocked",)) == sorted(
        [("group-1/sample-001", "sample.py"), ("group-1", "group.py"), (".", "summary.py")])
    (gs3.project / "group-1" / "sample-001" / "_container.json").write_text(
        json.dumps({"name": "sample-001", "type": "sample", "tags": [], "metadata": {"sample": 1}}))
    assert gs3.ran() == sorted([("group-1", "group.py"), (".", "summary.py")])


# ---------------------------------------------------------------------------- explain


def test_why_names_the_run_and_its_inputs(gs3: GS) -> None:
    out_file = gs3.project / "group-0" / "group_stats" / "group_stats.txt"
    code, out, _ = cli("--state", gs3.state, "why", out_file, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["path"] == str(gs3.project / "group-0" / "group_stats")
    assert info["kind"] == "asset" and info["creator_type"] == "script"
    (run,) = info["runs"]
    assert run["container"] == str(gs3.project / "group-0")
    assert run["script"] == str(gs3.analysis / "group.py")
    assert run["status"] == "ok"
    assert run["inputs"] == [str(gs3.project / "group-0" / f"sample-{s:03d}" / "stats")
                             for s in range(S)]
    assert run["queries"][0]["search"] == {"type": "stats"}
    assert run["stale"] == []
    code, text, _ = cli("--state", gs3.state, "why", out_file)
    assert code == 0
    assert "group.py" in text and "sample-000/stats" in text and "up to date" in text
    (gs3.project / "group-0" / "sample-001" / "raw" / "data.csv").write_text("value\n1\n")
    code, out, _ = cli("--state", gs3.state, "why", gs3.project / "group-0" / "sample-001" / "stats")
    assert "input group-0/sample-001/raw/data.csv changed" in out
    # The same reason as data: what happened, to which file (rendered in words at the edge).
    code, out, _ = cli("--state", gs3.state, "why", gs3.project / "group-0" / "sample-001" / "stats",
                       "--json")
    (run,) = json.loads(out)["runs"]
    assert run["reasons"] == [{"kind": "input-data-changed", "query": None,
                               "path": str(gs3.project / "group-0" / "sample-001" / "raw" / "data.csv")}]


def test_why_on_a_user_file(gs3: GS) -> None:
    code, out, _ = cli("--state", gs3.state, "why",
                       gs3.project / "group-0" / "sample-000" / "raw" / "data.csv", "--json")
    assert code == 0
    info = json.loads(out)
    assert info["creator_type"] == "user" and info["runs"] == []


def test_graph_formats_contain_the_edges(gs3: GS) -> None:
    code, out, _ = cli("--state", gs3.state, "graph", "--root", gs3.project, "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert len(data["runs"]) == len(ALL_RUNS)
    edges = {(e["from"], e["asset"], e["to"]) for e in data["edges"]}
    p, a = gs3.project, gs3.analysis
    for g in range(G):
        for s in range(S):
            assert (f"{p}/group-{g}/sample-{s:03d}::{a}/sample.py",
                    f"{p}/group-{g}/sample-{s:03d}/stats",
                    f"{p}/group-{g}::{a}/group.py") in edges
        assert (f"{p}/group-{g}::{a}/group.py", f"{p}/group-{g}/group_stats",
                f"{p}::{a}/summary.py") in edges
    assert len(edges) == G * S + G
    assert {x["asset"] for x in data["produced"]} == {
        *(f"{p}/group-{g}/sample-{s:03d}/stats" for g in range(G) for s in range(S)),
        *(f"{p}/group-{g}/group_stats" for g in range(G)), f"{p}/summary"}

    code, dot, _ = cli("--state", gs3.state, "graph", "--root", gs3.project, "--format", "dot")
    assert code == 0 and dot.startswith("digraph")
    assert dot.count(" -> ") == len(data["produced"]) + len(edges)
    assert 'label="group.py @ group-1"' in dot and 'label="group-1/sample-002/stats"' in dot
    code, mermaid, _ = cli("--state", gs3.state, "graph", "--root", gs3.project, "--format", "mermaid")
    assert code == 0 and mermaid.startswith("flowchart")
    assert mermaid.count(" --> ") == len(data["produced"]) + len(edges)


def test_script_without_the_library_sees_its_whole_subtree(tmp_path: Path, state: Path) -> None:
    """No queries recorded: any change below its container makes it stale, nothing else."""
    count = tmp_path / "count.log"
    make_tree(tmp_path / "analysis", {
        "plain.sh": f"ls -R . >/dev/null; echo \"$THOT_CONTAINER_ID\" >> {count}\n",
    })
    assoc = {"_scripts.json": [{"script": "root:/../analysis/plain.sh"}]}
    raw = {"_asset.json": {"type": "raw", "file": "d.csv"}, "d.csv": "1\n"}
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "g0": {"_container.json": {}, **assoc, "s": {"_container.json": {}, "raw": raw}},
        "g1": {"_container.json": {}, **assoc, "s": {"_container.json": {}, "raw": raw}},
    })
    code, report = run_json(state, root, "--changed")
    assert code == 0 and rel_runs(report, root) == [("g0", "plain.sh"), ("g1", "plain.sh")]
    os.utime(root / "g0" / "s" / "raw" / "d.csv", (2_000_000_000, 2_000_000_000))
    assert run_json(state, root, "--changed")[1]["runs"] == []
    (root / "g1" / "s" / "raw" / "d.csv").write_text("2\n")
    assert rel_runs(run_json(state, root, "--changed")[1], root) == [("g1", "plain.sh")]
    make_tree(root / "g0" / "s" / "new", {"_asset.json": {"file": "x"}})
    code, out, _ = cli("--state", state, "run", "--root", root, "--changed", "--dry-run")
    assert "new object g0/s/new matches anything" in out
    assert rel_runs(run_json(state, root, "--changed")[1], root) == [("g0", "plain.sh")]
    assert len(count.read_text().splitlines()) == 4


def test_cycle_is_reported_once_not_looped(tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path / "analysis", {
        # a (runs first) reads b's output; b reads a's: each run changes the other's input
        "a.py": (
            "from thot import ThotProject\n"
            "db = ThotProject()\n"
            "b = db.find_asset({'type': 'b_out'})\n"
            "n = int(open(b.file).read()) if b else 0\n"
            "open(db.add_asset({'file': 'a.txt', 'type': 'a_out'}, 'a'), 'w').write(str(n + 1))\n"
        ),
        "b.py": (
            "from thot import ThotProject\n"
            "db = ThotProject()\n"
            "a = db.find_asset({'type': 'a_out'})\n"
            "n = int(open(a.file).read())\n"
            "open(db.add_asset({'file': 'b.txt', 'type': 'b_out'}, 'b'), 'w').write(str(n + 1))\n"
        ),
    })
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": [{"script": "root:/../analysis/b.py", "priority": 1},
                          {"script": "root:/../analysis/a.py", "priority": 0}],
    })
    for expected_a in ("1", "3"):
        code, report = run_json(state, root, "--changed")
        assert code == 1
        assert report["counts"] == {"ok": 2, "cycle": 1}
        (cycle,) = [r for r in report["runs"] if r["status"] == "cycle"]
        assert cycle["script"].endswith("a.py")
        assert "cycle" in cycle["message"]
        assert (root / "a" / "a.txt").read_text() == expected_a


def test_state_survives_reopen(gs3: GS) -> None:
    store = Store(gs3.state)
    engine = Engine(Index.load(gs3.project), store)
    assert engine.stale(engine.plan()) == []
    assert len(engine.rows) == len(ALL_RUNS)
    assert all(row.status == "ok" and row.record for row in engine.rows.values())
    assert len(store.history(str(gs3.project), limit=100)) == len(ALL_RUNS)
    store.close()
    # a new process sees the same: nothing to do
    proc = subprocess.run(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(gs3.state), "run", "--root",
         str(gs3.project), "--changed", "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["runs"] == []
    add_sample(gs3.project, "group-2", "sample-005")
    assert len(gs3.ran()) == 3
    store = Store(gs3.state)
    assert len(store.history(str(gs3.project), limit=100)) == len(ALL_RUNS) + 3
    store.close()


def test_interrupted_run_reruns(gs3: GS) -> None:
    store = Store(gs3.state)
    key = (str(gs3.project / "group-0"), str(gs3.analysis / "group.py"))
    store.mark_running(str(gs3.project), *key, log="x", reasons=["test"])
    store.close()
    assert gs3.dry() == {("group-0", "group.py"): ["interrupted before it finished"]}
    assert gs3.ran() == [("group-0", "group.py")]
