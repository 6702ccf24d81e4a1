"""The script API (``thot`` / ``thot.thot``): what analysis scripts written for the original
Thot rely on."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corekit import EXAMPLE, make_tree, run_json

from thot.thot import LocalProject, ThotError, ThotProject

SEED_STATS = EXAMPLE / "analysis" / "stats.py"


@pytest.fixture
def proj(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # LocalProject changes the working directory: restore it
    return make_tree(tmp_path / "proj", {
        "_container.json": {"type": "project", "metadata": {"lab": "B12", "temp": 20}},
        "g1": {
            "_container.json": {"type": "group", "metadata": {"temp": 30}},
            "_notes": {"log.txt": "calibrated"},
            "s1": {
                "_container.json": {"type": "sample", "metadata": {"sample": 1}},
                "raw": {"_asset.json": {"type": "raw", "file": "data.csv"}, "data.csv": "v\n1\n"},
            },
        },
        "g2": {
            "_container.json": {"type": "group"},
            "s2": {
                "_container.json": {"type": "sample"},
                "raw": {"_asset.json": {"type": "raw", "file": "data.csv"}, "data.csv": "v\n2\n"},
            },
        },
    })


def test_seed_example_runs_unchanged(tmp_path: Path, state: Path) -> None:
    work = tmp_path / "example"
    shutil.copytree(EXAMPLE, work)
    assert (work / "analysis" / "stats.py").read_bytes() == SEED_STATS.read_bytes()
    assert b"from thot.thot import LocalProject" in SEED_STATS.read_bytes()
    thot = shutil.which("thot", path=os.path.dirname(sys.executable)) or shutil.which("thot")
    command = [thot] if thot else [sys.executable, "-m", "thotd.cli.thot"]
    proc = subprocess.run(
        [*command, "--state", str(state), "run", "--root", str(work / "project")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "5 ok" in proc.stdout
    with open(work / "project" / "summary" / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["sample"], r["temperature_c"]) for r in rows] == [
        ("batch-a/sample-1", "25"), ("batch-a/sample-2", "25"),
        ("batch-b/sample-1", "40"), ("batch-b/sample-2", "40"),
    ]
    for r in rows:  # the mean of each sample's times.csv, computed by the seed script
        batch, sample = r["sample"].split("/")
        times = (work / "project" / batch / sample / "times" / "times.csv").read_text().split()[1:]
        mean = sum(float(line.split(",")[1]) for line in times) / len(times)
        assert float(r["mean_time_s"]) == pytest.approx(mean)
    stats = json.loads((work / "project" / "batch-b" / "sample-2" / "stats" / "_asset.json").read_text())
    assert stats["name"] == "sample-2 Stats"
    assert stats["creator_type"] == "script"
    assert stats["creator"] == str(work / "analysis" / "stats.py")


def test_local_project_without_env_says_how_to_run() -> None:
    with pytest.raises(ThotError) as info:
        LocalProject()
    msg = str(info.value)
    assert "thot run --root" in msg and "THOT_CONTAINER_ID" in msg


def test_not_a_container(tmp_path: Path) -> None:
    with pytest.raises(ThotError):
        LocalProject(root=tmp_path)


def test_thot_project_is_local_project() -> None:
    import thot

    assert thot.ThotProject is ThotProject is LocalProject
    assert thot.LocalProject is LocalProject
    with pytest.raises(AttributeError):
        thot.nothing  # noqa: B018


def test_active_container_from_env_and_cwd(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THOT_CONTAINER_ID", str(proj / "g1"))
    db = LocalProject()
    assert db.root == str(proj / "g1")
    assert os.getcwd() == str(proj / "g1")
    assert not db.dev_mode()


def test_dev_mode(proj: Path) -> None:
    db = LocalProject(root=proj / "g1" / "s1")
    assert db.dev_mode()
    assert db.root == str(proj / "g1" / "s1")
    assert os.getcwd() == str(proj / "g1" / "s1")


def test_find_sees_only_the_active_subtree(proj: Path) -> None:
    db = LocalProject(root=proj / "g1")
    containers = db.find_containers()
    assert [c["_id"] for c in containers] == [str(proj / "g1"), str(proj / "g1" / "s1")]
    assert [a["_id"] for a in db.find_assets({"type": "raw"})] == [str(proj / "g1" / "s1" / "raw")]
    assert db.find_container({"_id": str(proj / "g2")}) is None
    assert db.find_container({"_id": str(proj)}) is None
    assert db.find_asset({"type": "nothing"}) is None
    assert db.find_container({"type": "sample"})["_id"] == str(proj / "g1" / "s1")
    top = LocalProject(root=proj)
    assert len(top.find_assets()) == 2


def test_returned_objects(proj: Path) -> None:
    db = LocalProject(root=proj / "g1")
    group = db.find_container({"type": "group"})
    assert group.name == group["name"] == "g1"
    assert group._id == str(proj / "g1")
    assert group.parent == str(proj)
    assert group.metadata == {"lab": "B12", "temp": 30}  # effective
    assert group.notes[0]["title"] == "log" and group.notes[0]["content"] == "calibrated"
    assert group.children == [str(proj / "g1" / "s1")]
    assert group.assets == []
    assert group.scripts == []
    raw = db.find_asset({"type": "raw"})
    assert raw.file == str(proj / "g1" / "s1" / "raw" / "data.csv")
    assert os.path.isabs(raw["file"])
    assert raw.metadata == {"lab": "B12", "temp": 30, "sample": 1}
    with pytest.raises(AttributeError):
        raw.nope  # noqa: B018
    json.dumps(raw)  # still a plain dict for JSON


def test_search_by_inherited_metadata(proj: Path) -> None:
    db = LocalProject(root=proj)
    hot = db.find_containers({"metadata.temp": {"$gte": 30}})
    assert [c.name for c in hot] == ["g1", "s1"]


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "", "a\\b", "../x"])
def test_add_asset_refuses_bad_ids(proj: Path, bad: str) -> None:
    db = LocalProject(root=proj / "g1")
    with pytest.raises(ValueError):
        db.add_asset({"file": "x.csv"}, bad)
    assert sorted(os.listdir(proj / "g1")) == ["_container.json", "_notes", "s1"]


def test_add_asset_writes_object_and_returns_path(proj: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = str(proj.parent / "analysis" / "make.py")
    monkeypatch.setenv("THOT_CONTAINER_ID", str(proj / "g1"))
    monkeypatch.setenv("THOT_SCRIPT_ID", script)
    db = LocalProject()
    path = db.add_asset({"file": "out.csv", "type": "stats", "metadata": {"k": 1},
                         "creator_type": "user", "creator": "someone"}, "out")
    assert path == str(proj / "g1" / "out" / "out.csv")
    props = json.loads((proj / "g1" / "out" / "_asset.json").read_text())
    assert props["creator_type"] == "script"
    assert props["creator"] == script
    assert props["type"] == "stats" and props["metadata"] == {"k": 1}
    # overwrite (the default) replaces; overwrite=False refuses
    db.add_asset({"file": "out2.csv", "type": "stats"}, "out")
    assert json.loads((proj / "g1" / "out" / "_asset.json").read_text())["file"] == "out2.csv"
    with pytest.raises(FileExistsError):  # and a RuntimeError, as the original raised
        db.add_asset({"file": "out3.csv"}, "out", overwrite=False)
    assert json.loads((proj / "g1" / "out" / "_asset.json").read_text())["file"] == "out2.csv"
    assert not [n for n in os.listdir(proj / "g1" / "out") if n.endswith(".tmp")]


def test_add_asset_without_id_names_the_folder_and_replaces_it(proj: Path) -> None:
    """As the original (0.5+): the folder is the name, then the file, then a uuid, so a rerun
    replaces its own output instead of leaving a stale copy."""
    db = LocalProject(root=proj / "g1")
    a = db.add_asset({"file": "a.txt", "name": "My plot"})
    b = db.add_asset({"file": "b.txt", "name": "My plot"})
    assert a == str(proj / "g1" / "My plot" / "a.txt") and b == str(proj / "g1" / "My plot" / "b.txt")
    assert json.loads((proj / "g1" / "My plot" / "_asset.json").read_text())["file"] == "b.txt"
    assert db.add_asset({"file": "c.csv"}) == str(proj / "g1" / "c.csv" / "c.csv")
    c = Path(db.add_asset({"type": "x"}))
    assert c.name == c.parent.name and len(c.name) == 36  # a uuid, which is also the file
    assert sorted(os.listdir(proj / "g1")) == sorted(["_container.json", "_notes", "s1", "My plot",
                                                      "c.csv", c.name])


def test_add_asset_fills_the_callers_dict_and_keeps_root_paths(proj: Path) -> None:
    db = LocalProject(root=proj / "g1")
    props: dict[str, Any] = {"name": "out"}
    path = db.add_asset(props)
    assert props["file"] == "out" and props["creator_type"] == "script" and "creator" in props
    assert path == str(proj / "g1" / "out" / "out")
    db.add_asset({"file": "root:/shared/x.csv"}, "linked")
    assert json.loads((proj / "g1" / "linked" / "_asset.json").read_text())["file"] == "root:/shared/x.csv"
    with pytest.raises(RuntimeError):
        db.add_asset({"file": "y"}, "linked", overwrite=False)


def test_add_asset_validates(proj: Path) -> None:
    db = LocalProject(root=proj / "g1")
    with pytest.raises(ValueError):
        db.add_asset({"file": "x", "metadata": ["not", "a", "dict"]}, "badmeta")
    # what the original accepted loads, with a warning
    db.add_asset({"file": "x", "tags": "notalist", "name": 5}, "badtags")
    from thotd.project.index import Index

    index = Index.load(proj)
    assert index.errors() == []
    assert len([w for w in index.load_warnings() if "badtags" in w]) == 2


def test_dev_mode_is_static_and_dev_root_is_used_by_hand(
    proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert LocalProject.dev_mode() is True and ThotProject.dev_mode() is True
    db = ThotProject(dev_root=proj / "g2")
    assert db.root == str(proj / "g2")
    monkeypatch.setenv("THOT_CONTAINER_ID", str(proj / "g1"))
    assert LocalProject.dev_mode() is False
    assert ThotProject(dev_root=proj / "g2").root == str(proj / "g1")  # the runner's wins


def test_missing_container_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        LocalProject()


def test_relative_roots_resolve_against_the_first_working_directory(
    proj: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(proj.parent)
    first = LocalProject("proj/g1")
    assert os.getcwd() == str(proj / "g1")
    second = LocalProject("proj/g2")  # not proj/g1/proj/g2
    assert (first.root, second.root) == (str(proj / "g1"), str(proj / "g2"))
    assert os.environ["THOT_ORIGINAL_DIR"] == str(proj.parent)


def test_scripts_are_associations_in_file_order(tree: Any) -> None:
    root = tree({"_container.json": {}, "_scripts.json": [
        {"script": "b.py", "priority": 2}, {"script": "a.py", "priority": 1.5, "autorun": False},
        {"script": "c.py"}]})
    (c,) = LocalProject(root).find_containers()
    assert [(s.script, s.priority, s.autorun) for s in c.scripts] == [
        (str(root / "b.py"), 2, True), (str(root / "a.py"), 1.5, False), (str(root / "c.py"), 0, True)]
    assert type(c.scripts[0].priority) is int
    assert c.scripts[0]["script"] == c.scripts[0].script
    assert sorted(c.scripts)[0].script == str(root / "c.py")


def test_fields_the_file_leaves_out_read_as_the_originals_defaults(proj: Path) -> None:
    from datetime import datetime

    db = LocalProject(root=proj / "g1")
    raw = db.find_asset({"type": "raw"})
    assert isinstance(raw.created, datetime) and raw.roles == [] and raw.tags == []
    assert raw.creator_type is None and raw["description"] is None and raw.get("creator") is None
    assert "tags" not in raw  # ... but they are not in the object: a search cannot match them
    note = db.find_container({"type": "group"}).notes[0]
    assert isinstance(note["created"], str) and datetime.fromisoformat(note["created"])


def test_search_sees_only_keys_the_file_sets(tree: Any) -> None:
    root = tree({"_container.json": {}, "a": {"_container.json": {"tags": [], "description": None}},
                 "b": {"_container.json": {}}})
    db = LocalProject(root)
    assert [c.name for c in db.find_containers({"tags": []})] == ["a"]
    assert [c.name for c in db.find_containers({"description": None})] == ["a"]
    calls: list[Any] = []
    db.find_containers({"description": lambda v: calls.append(v) or True})
    assert calls == [None]  # called for "a" only


def test_script_under_runner(tmp_path: Path, state: Path) -> None:
    """A script run by `thot run` gets the env, the cwd, dev_mode() False; its outputs carry
    creator = the script's path."""
    root = make_tree(tmp_path, {
        "analysis": {"probe.py": (
            "import json, os\n"
            "from thot import ThotProject\n"
            "db = ThotProject()\n"
            "info = {'cwd': os.getcwd(), 'root': db.root, 'dev': db.dev_mode(),\n"
            "        'assets': [a.name for a in db.find_assets()]}\n"
            "path = db.add_asset({'file': 'probe.json', 'type': 'probe'}, 'probe')\n"
            "open(path, 'w').write(json.dumps(info))\n"
        )},
        "proj": {
            "_container.json": {},
            "s": {
                "_container.json": {},
                "_scripts.json": [{"script": "root:/../analysis/probe.py"}],
                "raw": {"_asset.json": {"file": "d.csv", "name": "raw"}},
            },
        },
    })
    code, report = run_json(state, root / "proj")
    assert code == 0, report
    s = root / "proj" / "s"
    info = json.loads((s / "probe" / "probe.json").read_text())
    assert info == {"cwd": str(s), "root": str(s), "dev": False, "assets": ["raw"]}
    props = json.loads((s / "probe" / "_asset.json").read_text())
    assert props["creator"] == str(root / "analysis" / "probe.py")
    assert props["creator_type"] == "script"


@pytest.mark.parametrize("statement", ["import thot", "from thot import ThotProject",
                                       "from thot.thot import LocalProject"])
def test_import_thot_is_light(statement: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", statement],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "thot" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("pydantic", "pydantic_core", "sqlite3",
                                                           "watchdog", "structlog", "apscheduler")}
    assert not heavy, f"{statement!r} imports {sorted(heavy)}"


def test_api_in_a_subprocess_by_hand(proj: Path) -> None:
    """Run by hand with the env var the error message suggests: it works."""
    code = (
        "from thot.thot import LocalProject\n"
        "db = LocalProject()\n"
        "print(db.find_asset({'type': 'raw'}).file)\n"
    )
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("THOT")}
    env["THOT_CONTAINER_ID"] = str(proj / "g2")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(proj / "g2" / "s2" / "raw" / "data.csv")]


def test_import_thot_leaves_the_original_entry_points_unloaded() -> None:
    """``thot.filter``, ``thot.db.local``, ``thot.utilities`` and ``thot.runner`` exist for
    scripts written for the original; a script that does not use them does not pay for them."""
    code = ("import sys, thot\n"
            "print(sorted(m for m in sys.modules if m.startswith(('thot.', 'thotd'))))\n"
            "print(thot.filter({'k': 1}, [{'k': 1}, {'k': True}, {'k': 2}, {}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded, filtered = proc.stdout.splitlines()
    assert loaded == "[]"
    assert filtered == "[{'k': 1}, {'k': True}]"
