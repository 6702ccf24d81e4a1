"""The in-memory index: one pass over real folders, and incremental updates that end where a
fresh load would."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from corekit import add_sample, cli, make_gs, make_tree, snapshot_index
from editkit import apply_edit, base_tree, edit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thotd.project.index import Index, NotAProject, find_project_root

NOTE_MTIME = 1_600_000_000.25


def nested_spec() -> dict[str, Any]:
    return {
        "_container.json": {"name": "Project", "type": "project",
                            "metadata": {"lab": "B12", "temp": 20, "nested": {"x": 1}}},
        "_scripts.json": [
            {"script": "root:/../analysis/late.py", "priority": 2},
            {"script": "root:/../analysis/first-tie.py", "priority": 1},
            {"script": "root:/../analysis/second-tie.py", "priority": 1},
            {"script": "local.py"},
            {"script": "/abs/manual.py", "priority": -1, "autorun": False},
        ],
        "_notes": {"readme.txt": "hello\nworld\n"},
        "b-group": {
            "_container.json": {"type": "group", "metadata": {"temp": 30, "nested": {"y": 2}}},
            "s1": {
                "_container.json": {"type": "sample", "metadata": {"sample": 1}},
                "raw": {"_asset.json": {"type": "raw", "file": "data.csv"}, "data.csv": "v\n1\n"},
            },
        },
        "a-group": {
            "_container.json": {"type": "group", "tags": ["pilot"]},
            "s2": {
                "_container.json": {"type": "sample", "metadata": {"temp": 40}},
                "img": {"_asset.json": {"type": "image", "file": "root:/shared/pic.png",
                                        "metadata": {"temp": 41}}},
            },
            "s10": {"_container.json": {"type": "sample"}},
        },
        "zz-asset": {"_asset.json": {"type": "raw", "file": "/abs/data.bin"}},
        "scratch": {  # not an object: cuts the tree
            "notes.txt": "plain",
            "hidden": {"_container.json": {"type": "sample"}},
        },
        "shared": {"pic.png": b"\x89PNG"},
    }


@pytest.fixture
def nested(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "proj", nested_spec())
    os.utime(root / "_notes" / "readme.txt", (NOTE_MTIME, NOTE_MTIME))
    return root


def test_inherited_metadata_nearer_wins_shallow_merge(nested: Path) -> None:
    index = Index.load(nested)
    s1 = index.view(str(nested / "b-group" / "s1"))
    # nearer object wins key by key; a dict value is replaced whole (shallow merge)
    assert s1["metadata"] == {"lab": "B12", "temp": 30, "nested": {"y": 2}, "sample": 1}
    raw = index.view(str(nested / "b-group" / "s1" / "raw"))
    assert raw["metadata"] == {"lab": "B12", "temp": 30, "nested": {"y": 2}, "sample": 1}
    img = index.view(str(nested / "a-group" / "s2" / "img"))
    assert img["metadata"] == {"lab": "B12", "temp": 41, "nested": {"x": 1}}
    assert index.view(str(nested / "a-group"))["metadata"] == {
        "lab": "B12", "temp": 20, "nested": {"x": 1}}
    # own properties are kept apart from the effective metadata
    assert index.nodes[str(nested / "b-group" / "s1")].props["metadata"] == {"sample": 1}


def test_inherited_metadata_is_searchable(nested: Path) -> None:
    index = Index.load(nested)
    found = index.find_assets({"metadata.lab": "B12", "metadata.temp": 30})
    assert [a["_id"] for a in found] == [str(nested / "b-group" / "s1" / "raw")]


def test_notes(nested: Path) -> None:
    index = Index.load(nested)
    notes = index.view(str(nested))["notes"]
    assert notes == [{"title": "readme", "created": datetime.fromtimestamp(NOTE_MTIME).isoformat(" "),
                      "content": "hello\nworld\n"}]
    assert index.view(str(nested / "a-group"))["notes"] == []
    # _notes is not a child object
    assert str(nested / "_notes") not in index.nodes


def test_script_paths_and_priorities(nested: Path, tmp_path: Path) -> None:
    index = Index.load(nested)
    scripts = index.view(str(nested))["scripts"]
    analysis = tmp_path / "analysis"
    # Scripts see them in file order, as the original listed them; the run order (priority,
    # then file order) is the index's own.
    assert [(s["script"], s["priority"], s["autorun"]) for s in scripts] == [
        (str(analysis / "late.py"), 2, True),
        (str(analysis / "first-tie.py"), 1, True),
        (str(analysis / "second-tie.py"), 1, True),
        (str(nested / "local.py"), 0, True),
        ("/abs/manual.py", -1, False),
    ]
    assert [s["script"] for s in index.nodes[str(nested)].scripts] == [
        "/abs/manual.py", str(nested / "local.py"), str(analysis / "first-tie.py"),
        str(analysis / "second-tie.py"), str(analysis / "late.py")]


def test_asset_file_paths(nested: Path) -> None:
    index = Index.load(nested)
    assert index.view(str(nested / "b-group" / "s1" / "raw"))["file"] == str(
        nested / "b-group" / "s1" / "raw" / "data.csv")
    assert index.view(str(nested / "a-group" / "s2" / "img"))["file"] == str(
        nested / "shared" / "pic.png")
    assert index.view(str(nested / "zz-asset"))["file"] == "/abs/data.bin"


def test_non_object_folder_cuts_the_tree(nested: Path) -> None:
    index = Index.load(nested)
    assert str(nested / "scratch") not in index.nodes
    assert str(nested / "scratch" / "hidden") not in index.nodes
    assert str(nested / "shared") not in index.nodes
    assert len(index.nodes) == 9


def test_order_is_depth_first_siblings_by_folder_name(nested: Path) -> None:
    index = Index.load(nested)
    rel = [os.path.relpath(n.id, nested) for n in index.walk()]
    assert rel == [".", "a-group", "a-group/s10", "a-group/s2", "a-group/s2/img",
                   "b-group", "b-group/s1", "b-group/s1/raw", "zz-asset"]
    assert [os.path.relpath(c["_id"], nested) for c in index.find_containers()] == [
        ".", "a-group", "a-group/s10", "a-group/s2", "b-group", "b-group/s1"]
    assert [os.path.relpath(a["_id"], nested) for a in index.find_assets()] == [
        "a-group/s2/img", "b-group/s1/raw", "zz-asset"]
    assert [os.path.relpath(c.id, nested) for c in index.containers_postorder()] == [
        "a-group/s10", "a-group/s2", "a-group", "b-group/s1", "b-group", "."]
    view = index.view(str(nested))
    assert view["children"] == [str(nested / "a-group"), str(nested / "b-group")]
    assert view["assets"] == [str(nested / "zz-asset")]


def test_order_does_not_depend_on_creation_order(tmp_path: Path) -> None:
    names = ["c", "a", "b10", "b2", "B"]
    roots = []
    for attempt, order in enumerate([names, list(reversed(names))]):
        root = make_tree(tmp_path / f"p{attempt}", {"_container.json": {}})
        for name in order:
            make_tree(root / name, {"_container.json": {}})
        roots.append(root)
    orders = [[os.path.basename(n.id) for n in Index.load(r).walk()][1:] for r in roots]
    assert orders[0] == orders[1] == sorted(names)


def test_focus_load_sees_the_subtree_and_the_inherited_metadata(nested: Path) -> None:
    index = Index.load(nested, focus=nested / "b-group")
    ids = [os.path.relpath(o["_id"], nested) for o in index.find_containers(start=str(nested / "b-group"))]
    assert ids == ["b-group", "b-group/s1"]
    assert str(nested / "a-group") not in index.nodes
    assert index.view(str(nested / "b-group" / "s1"))["metadata"]["lab"] == "B12"


def test_both_object_files_skip_the_folder_with_a_warning(tree: Any) -> None:
    """As the original: such a folder (and what is below it) is no object; it blocks nothing,
    and the load says why it was skipped."""
    root = tree({
        "_container.json": {},
        "bad": {"_container.json": {}, "_asset.json": {"file": "x"},
                "inner": {"_asset.json": {"file": "y"}}},
        "good": {"_container.json": {"type": "sample"}},
    })
    index = Index.load(root)
    assert index.errors() == []
    assert index.blocked_by() == {}
    assert str(root / "bad") not in index.nodes
    assert [c["_id"] for c in index.find_containers()] == [str(root), str(root / "good")]
    assert index.find_assets() == []
    assert index.view(str(root))["children"] == [str(root / "good")]
    for warnings in (index.load_warnings(), index.warnings()):
        assert len(warnings) == 1 and "both" in warnings[0] and str(root / "bad") in warnings[0]
    (root / "bad" / "_asset.json").unlink()
    index.update([str(root / "bad" / "_asset.json")])
    assert index.nodes[str(root / "bad")].kind == "container"
    assert [a["_id"] for a in index.find_assets()] == [str(root / "bad" / "inner")]
    assert index.load_warnings() == []


def test_fields_the_original_accepts_load_with_warnings(tree: Any) -> None:
    root = tree({
        "_container.json": {},
        "s": {"_container.json": {"tags": "x", "name": 5},
              "a": {"_asset.json": {"file": "d.csv", "description": ["long"]}}},
    })
    index = Index.load(root)
    assert index.errors() == [] and index.blocked_by() == {}
    view = index.view(str(root / "s"))
    assert (view["tags"], view["name"]) == ("x", 5)
    assert [c["_id"] for c in index.find_containers({"tags": "x"})] == [str(root / "s")]
    assert index.view(str(root / "s" / "a"))["description"] == ["long"]
    warnings = index.load_warnings()
    assert len(warnings) == 3 and all("kept as written" in w for w in warnings)
    assert sorted(w.split(": ")[1] for w in warnings) == ["description", "name", "tags"]


def test_broken_file_is_an_error_with_line_and_column(tree: Any) -> None:
    root = tree({
        "_container.json": {},
        "a": {"_container.json": '{\n  "type": "sample",\n}\n'},
        "b": {"_container.json": {"type": "sample"}},
        "c": {"_container.json": {}, "_scripts.json": [{"script": "x.py", "autorun": "maybe"}]},
    })
    index = Index.load(root)
    errs = {e.path: e for e in index.errors()}
    assert set(errs) == {str(root / "a" / "_container.json"), str(root / "c" / "_scripts.json")}
    bad_json = errs[str(root / "a" / "_container.json")]
    assert (bad_json.line, bad_json.column) == (3, 1)
    assert errs[str(root / "c" / "_scripts.json")].field == "[0].autorun"
    assert [c["_id"] for c in index.find_containers({"type": "sample"})] == [str(root / "b")]
    blocked = index.blocked_by()  # what the run plan holds: b's runs may go, the root's wait
    assert str(root / "b") not in blocked
    assert blocked[str(root)].path in errs


def test_validate_command_reports_file_line_column(tree: Any) -> None:
    root = tree({"_container.json": {}, "a": {"_container.json": '{"type": }'}})
    code, out, _ = cli("validate", root, "--json")
    assert code == 1
    report = json.loads(out)
    assert report["errors"] == [{"file": str(root / "a" / "_container.json"), "field": None,
                                 "reason": report["errors"][0]["reason"], "line": 1,
                                 "column": 10}]
    code, out, _ = cli("validate", root)
    assert code == 1 and f"{root / 'a' / '_container.json'}:1:10" in out
    code, out, _ = cli("tree", root)
    assert code == 0 and "INVALID" in out


def test_not_a_project(tmp_path: Path) -> None:
    with pytest.raises(NotAProject):
        Index.load(tmp_path)
    code, _, err = cli("validate", tmp_path)
    assert code == 1 and "_container.json" in err


def test_find_project_root(nested: Path) -> None:
    assert find_project_root(nested / "b-group" / "s1") == str(nested)


# ---------------------------------------------------------------------------- incremental


def assert_same_as_fresh(index: Index) -> None:
    fresh = Index.load(index.root)
    assert snapshot_index(index) == snapshot_index(fresh)


def test_update_metadata_change_at_group(nested: Path) -> None:
    index = Index.load(nested)
    group = nested / "b-group"
    (group / "_container.json").write_text(json.dumps({"type": "group", "metadata": {"temp": 31}}))
    changes = index.update([str(group / "_container.json")])
    assert str(group / "s1" / "raw") in changes.modified
    assert index.view(str(group / "s1" / "raw"))["metadata"]["temp"] == 31
    assert "nested" in index.view(str(group / "s1"))["metadata"]
    assert index.view(str(group / "s1"))["metadata"]["nested"] == {"x": 1}
    assert_same_as_fresh(index)


def test_update_new_sample_created_in_steps(tmp_path: Path) -> None:
    project = make_gs(tmp_path / "gs", 2, 2)
    index = Index.load(project)
    sample = project / "group-1" / "sample-009"
    raw = sample / "raw"
    steps = [
        (lambda: sample.mkdir(), sample),
        (lambda: (sample / "_container.json").write_text('{"type": "sample", "metadata": {"sample": 9}}'),
         sample / "_container.json"),
        (lambda: (sample / "_scripts.json").write_text('[{"script": "root:/../analysis/sample.py"}]'),
         sample / "_scripts.json"),
        (lambda: raw.mkdir(), raw),
        (lambda: (raw / "_asset.json").write_text('{"type": "raw", "file": "data.csv"}'),
         raw / "_asset.json"),
        (lambda: (raw / "data.csv").write_text("value\n1\n"), raw / "data.csv"),
    ]
    seen_sample = seen_raw = False
    for op, path in steps:
        op()
        changes = index.update([str(path)])
        assert_same_as_fresh(index)
        if str(sample) in changes.added:
            seen_sample = True
        if str(raw) in changes.added:
            seen_raw = True
    assert seen_sample and seen_raw
    assert index.view(str(sample))["scripts"][0]["script"] == str(tmp_path / "gs" / "analysis" / "sample.py")
    assert index.view(str(raw))["metadata"] == {"project": "gs", "group": 1, "sample": 9}
    changes = index.update([str(raw / "data.csv")])
    assert changes.data == {str(raw)}


def test_update_new_sample_in_one_batch(tmp_path: Path) -> None:
    project = make_gs(tmp_path / "gs", 2, 2)
    index = Index.load(project)
    sample = add_sample(project, "group-0", "sample-007")
    changes = index.update([str(sample), str(sample / "raw" / "_asset.json")])
    assert changes.added == {str(sample), str(sample / "raw")}
    assert index.view(str(project / "group-0"))["children"][-1] == str(sample)
    assert_same_as_fresh(index)


def test_update_asset_deleted(nested: Path) -> None:
    index = Index.load(nested)
    raw = nested / "b-group" / "s1" / "raw"
    shutil.rmtree(raw)
    changes = index.update([str(raw)])
    assert changes.removed == {str(raw)}
    assert index.view(str(nested / "b-group" / "s1"))["assets"] == []
    assert str(raw / "data.csv") not in index.by_file
    assert_same_as_fresh(index)


def test_update_asset_file_removed_but_folder_kept(nested: Path) -> None:
    index = Index.load(nested)
    raw = nested / "b-group" / "s1" / "raw"
    (raw / "_asset.json").unlink()
    index.update([str(raw / "_asset.json")])
    assert str(raw) not in index.nodes
    assert_same_as_fresh(index)


def test_update_folder_moved_and_renamed(nested: Path) -> None:
    index = Index.load(nested)
    old = nested / "b-group" / "s1"
    new = nested / "a-group" / "s0"
    os.rename(old, new)
    changes = index.update([str(old), str(new)])
    assert str(old) in changes.removed and str(new / "raw") in changes.added
    assert index.view(str(new / "raw"))["metadata"]["nested"] == {"x": 1}
    assert index.view(str(new / "raw"))["file"] == str(new / "raw" / "data.csv")
    assert index.view(str(nested / "a-group"))["children"][0] == str(new)
    assert_same_as_fresh(index)
    renamed = nested / "a-group" / "zz"
    os.rename(new, renamed)
    index.update([str(new), str(renamed)])
    assert_same_as_fresh(index)


def test_update_moved_into_a_plain_folder_leaves_the_project(nested: Path) -> None:
    index = Index.load(nested)
    old = nested / "b-group" / "s1"
    os.rename(old, nested / "scratch" / "s1")
    index.update([str(old), str(nested / "scratch" / "s1")])
    assert not any(k.startswith(str(old)) for k in index.nodes)
    assert_same_as_fresh(index)


def test_update_broken_then_fixed(nested: Path) -> None:
    index = Index.load(nested)
    group = nested / "b-group"
    cfile = group / "_container.json"
    good = cfile.read_bytes()
    cfile.write_text('{"type": "group", "metadata": {"temp": 99}')  # cut short
    changes = index.update([str(cfile)])
    node = index.nodes[str(group)]
    assert not node.valid and str(group) in changes.modified
    assert node.errors[0].path == str(cfile) and node.errors[0].line == 1
    # the last good properties are kept: the descendants keep their inherited metadata
    assert node.props["metadata"] == {"temp": 30, "nested": {"y": 2}}
    assert index.view(str(group / "s1"))["metadata"]["temp"] == 30
    # invalid objects leave the answers and their parent's lists
    assert str(group) not in [c["_id"] for c in index.find_containers()]
    assert str(group) not in index.view(str(nested))["children"]
    assert sorted(str(e) for e in index.errors()) == sorted(
        str(e) for e in Index.load(nested).errors())
    cfile.write_bytes(good.replace(b"30", b"33"))
    index.update([str(cfile)])
    assert index.nodes[str(group)].valid
    assert index.view(str(group / "s1" / "raw"))["metadata"]["temp"] == 33
    assert str(group) in index.view(str(nested))["children"]
    assert_same_as_fresh(index)


def test_update_notes(nested: Path) -> None:
    index = Index.load(nested)
    note = nested / "b-group" / "_notes" / "todo.md"
    note.parent.mkdir()
    note.write_text("check\n")
    index.update([str(note)])
    assert index.view(str(nested / "b-group"))["notes"][0]["content"] == "check\n"
    assert_same_as_fresh(index)


def test_update_kind_change_and_both_files(nested: Path) -> None:
    index = Index.load(nested)
    folder = nested / "a-group" / "s10"
    (folder / "_asset.json").write_text('{"file": "x"}')
    index.update([str(folder / "_asset.json")])
    assert str(folder) not in index.nodes  # skipped, as the original does
    assert_same_as_fresh(index)
    (folder / "_container.json").unlink()
    index.update([str(folder / "_container.json")])
    assert index.nodes[str(folder)].kind == "asset"
    assert_same_as_fresh(index)


# ---------------------------------------------------------------------------- property


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(edit, min_size=1, max_size=8), st.booleans())
def test_random_edits_update_equals_fresh_load(edits: list[tuple[Any, ...]], batched: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        base_tree(root)
        index = Index.load(root)
        pending: list[str] = []
        for e in edits:
            paths = apply_edit(root, e)
            if batched:
                pending += paths
                continue
            index.update(paths)
            assert snapshot_index(index) == snapshot_index(Index.load(root)), e
        if batched:
            index.update(pending)
            assert snapshot_index(index) == snapshot_index(Index.load(root))


def test_object_files_of_every_size_and_kind_are_read_whole(tmp_path: Path) -> None:
    """A cold load reads an object file its folder listing calls regular without an
    ``fstat``; a file that fills the first read, a symlink to one, and a named pipe or
    ``/dev/zero`` behind a symlink take the careful way (read whole, or refused)."""
    from thotd.project import folder

    big_meta = {f"key{i:05d}": "v" * 40 for i in range(3000)}  # ~190 KiB
    root = make_tree(tmp_path / "p", {
        "_container.json": {},
        "big": {"_asset.json": {"file": "x", "metadata": big_meta}},
        "edge": {"_asset.json": {"file": "x", "pad": "p" * (folder._FIRST_READ - 31)}},
        "linked": {"_container.json": None},
        "pipe": None,
        "zero": None,
    })
    assert len((root / "edge" / "_asset.json").read_bytes()) == folder._FIRST_READ
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"type": "linked"}))
    (root / "linked" / "_container.json").rmdir()
    (root / "linked" / "_container.json").symlink_to(target)
    os.mkfifo(root / "pipe" / "_asset.json")
    (root / "zero" / "_asset.json").symlink_to("/dev/zero")
    index = Index.load(root)
    assert index.nodes[str(root / "big")].props["metadata"] == big_meta
    assert len(index.nodes[str(root / "edge")].props["pad"]) == folder._FIRST_READ - 31
    assert index.nodes[str(root / "linked")].props == {"type": "linked"}
    for name in ("pipe", "zero"):
        (err,) = index.nodes[str(root / name)].errors
        assert "not a regular file" in err.reason
