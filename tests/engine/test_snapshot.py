"""The index snapshot behind a quick ``thot run --changed``: a reload from it must end exactly
where a fresh load ends, name every object that changed, and keep only query answers that
are still true -- whatever happened on disk in between, however soon after the snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corekit import add_sample, cli, make_gs, run_json, snapshot_index, wait_past_racy_window
from editkit import apply_edit, base_tree, edit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thotd.engine import snapshot
from thotd.fingerprint import RACY_NS, trusted_key
from thotd.project.index import Index

QUERIES: list[tuple[str, Any]] = [
    ("asset", {"type": "raw"}),
    ("asset", {}),
    ("container", {"type": "sample"}),
    ("container", {"metadata.m": {"$gte": 1}}),
    ("*", None),
]


def answers(index: Index, *, cached: bool) -> dict[tuple[str, str, str], list[str]]:
    """Every query at every container, from the cache or computed from scratch."""
    out = {}
    for node in list(index.walk(include_invalid=True)):
        if node.kind != "container":
            continue
        for kind, search in QUERIES:
            if cached:
                ids = index.query_ids(kind, search, node.id)
            elif kind == "*":
                ids = [n.id for n in index.walk(node.id) if n.id != node.id]
            else:
                ids = [o["_id"] for o in index.find(kind, search, node.id)]
            out[(node.id, kind, json.dumps(search))] = ids
    return out


def views(index: Index) -> dict[str, Any]:
    return {n.id: (index.fingerprint(n.id) if n.valid else None, [str(e) for e in n.errors])
            for n in index.walk(include_invalid=True)}


def check_reload(root: Path, state: Path, before: Index) -> Index:
    fresh = Index.load(root)
    got, changes, _runs = snapshot.load(str(root), state)
    assert changes is not None, "the snapshot was not used"
    assert snapshot_index(got) == snapshot_index(fresh)
    assert answers(got, cached=True) == answers(fresh, cached=False)
    # every object that differs from the snapshot's is named as changed
    old, new = views(before), views(fresh)
    differ = {i for i in old.keys() | new.keys() if old.get(i) != new.get(i)}
    assert differ <= changes.added | changes.removed | changes.modified
    return got


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=6), st.lists(edit, max_size=4))
def test_reload_after_random_edits_equals_a_fresh_load(
    first: list[tuple[Any, ...]], second: list[tuple[Any, ...]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, state = Path(tmp) / "p", Path(tmp) / "state"
        base_tree(root)
        wait_past_racy_window(root)  # so the reload reuses what did not change
        index = Index.load(root, signatures=True)
        answers(index, cached=True)  # fill the answer cache that the snapshot keeps
        snapshot.save(index, state)
        for e in first:
            apply_edit(root, e)
        index = check_reload(root, state, index)
        # At once again: edits right after the snapshot (within a timestamp tick) count too.
        answers(index, cached=True)
        snapshot.save(index, state)
        for e in second:
            apply_edit(root, e)
        check_reload(root, state, index)


def test_unchanged_objects_are_not_read_again(tmp_path: Path) -> None:
    root = tmp_path / "p"
    base_tree(root)
    wait_past_racy_window(root)
    index = Index.load(root, signatures=True)
    fps = {nid: index.fingerprint(nid) for nid in index.nodes}
    prior = dict(index.nodes)
    apply_edit(root, ("meta", "g0", 3))
    got, changes = Index.restore(str(root), dict(prior), index._plain)
    g0 = str(root / "g0")
    # only g0's file was read again; below it objects changed by inheritance only
    assert [nid for nid in got.nodes if got.nodes[nid] is not prior.get(nid)] == [g0]
    assert changes.modified == {n.id for n in got.walk(g0)}
    assert not changes.added and not changes.removed
    # the others kept their fingerprints: nothing to compute again
    other = str(root / "g1" / "s0" / "raw")
    assert got.nodes[other]._fp == fps[other]
    assert got.nodes[str(root / "g0" / "s0" / "raw")]._fp is None


def test_a_same_size_rewrite_with_the_old_mtime_is_seen(tmp_path: Path) -> None:
    root, state = tmp_path / "p", tmp_path / "state"
    base_tree(root)
    wait_past_racy_window(root)
    snapshot.save(Index.load(root, signatures=True), state)
    asset = root / "g0" / "s0" / "raw"
    apply_edit(root, ("sneaky", "g0", "s0"))
    wait_past_racy_window(root)  # an old change: only the inode change time tells now
    got, changes, _runs = snapshot.load(str(root), state)
    assert changes is not None and str(asset) in changes.modified
    assert got.nodes[str(asset)].props["type"] == "rax"


def test_a_file_changed_just_before_it_was_read_is_not_trusted(tmp_path: Path) -> None:
    """File times come from a coarse clock: a same-size rewrite in the same tick as the read
    would keep every signature field, so a file that recent must be read again next time."""
    root = tmp_path / "p"
    base_tree(root)
    wait_past_racy_window(root)
    fresh = root / "g1" / "s1" / "raw" / "_asset.json"
    fresh.write_text(fresh.read_text())
    index = Index.load(root, signatures=True)
    done = time.time_ns()
    if fresh.stat().st_ctime_ns >= done - RACY_NS:  # read within the window (the usual case)
        assert index.nodes[str(fresh.parent)].sig is None
    assert index.nodes[str(root / "g1" / "s0" / "raw")].sig is not None
    assert trusted_key(fresh.stat(), time.time_ns() - RACY_NS) is None
    assert trusted_key(fresh.stat(), fresh.stat().st_ctime_ns + 1) is not None


def test_what_a_run_made_is_checked_for_its_consumers_though_they_were_clean(tmp_path: Path) -> None:
    """Known-clean runs are skipped unread; once a run below them writes, they are checked."""
    project = make_gs(tmp_path / "tree", 2, 2)
    state = tmp_path / "state" / "state.sqlite3"
    assert run_json(state, project)[0] == 0
    wait_past_racy_window(tmp_path / "tree")  # outputs old enough to be trusted unread
    assert run_json(state, project, "--changed")[1]["runs"] == []
    script = tmp_path / "tree" / "analysis" / "group.py"
    script.write_text(script.read_text().replace("sum=%r\\n", "sum=%r v=2\\n"))
    code, report = run_json(state, project, "--changed")
    ran = sorted(os.path.relpath(r["container"], project) for r in report["runs"])
    assert code == 0 and ran == [".", "group-0", "group-1"], report
    assert "v=2" in (project / "summary" / "summary.txt").read_text()


def test_a_broken_or_foreign_snapshot_means_a_full_load(tmp_path: Path) -> None:
    root, state = tmp_path / "p", tmp_path / "state"
    base_tree(root)
    snapshot.save(Index.load(root, signatures=True), state)
    path = snapshot.path_for(state, str(root))
    path.write_bytes(path.read_bytes()[:100])  # truncated
    got, changes, _runs = snapshot.load(str(root), state)
    assert changes is None
    assert snapshot_index(got) == snapshot_index(Index.load(root))
    other = tmp_path / "other"
    base_tree(other)
    snapshot.save(Index.load(other, signatures=True), state)
    os.replace(snapshot.path_for(state, str(other)), path)  # another project's, misfiled
    assert snapshot.load(str(root), state)[1] is None


def test_thot_run_keeps_a_snapshot_then_runs_only_what_changed(tmp_path: Path) -> None:
    """End to end: `thot run` leaves a snapshot (written by a detached child: wait for it);
    the next `--changed` uses it, and a new sample then runs exactly its three runs."""
    project = make_gs(tmp_path / "tree", 2, 2)
    state = tmp_path / "state" / "state.sqlite3"
    # a real `thot` process, its output read through a pipe: the detached writer must not
    # hold the pipe open
    done = subprocess.run(
        [sys.executable, "-m", "thotd.cli.thot", "--state", str(state), "run", "--root",
         str(project), "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["counts"] == {"ok": 7}
    snap = snapshot.path_for(state.parent, str(project))
    deadline = time.monotonic() + 30
    while not snap.exists():
        assert time.monotonic() < deadline, "no snapshot after thot run"
        time.sleep(0.02)
    code, report = run_json(state, project, "--changed")
    assert code == 0 and report["runs"] == []
    add_sample(project, "group-1", "sample-9")
    code, report = run_json(state, project, "--changed")
    ran = sorted(os.path.basename(r["script"]) for r in report["runs"])
    assert code == 0 and ran == ["group.py", "sample.py", "summary.py"], report
    # and `thot` still answers right after, the output complete
    code, out, _err = cli("--state", state, "run", "--root", project, "--changed", "--dry-run")
    assert code == 0 and "0 of 7" not in out and "runs would run" in out
