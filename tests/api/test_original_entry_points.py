"""The original's other entry points, offline (tests/compat compares them with the releases):
``thot.db.local.LocalDB``, ``thot.filter``, ``thot.utilities.ThotUtilities``,
``thot.runner.run`` and the original runner's options."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from corekit import make_tree


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "proj", {
        "_container.json": {"metadata": {"batch": 1}},
        "a": {"_container.json": {"type": "sample"},
              "_scripts.json": [{"script": "root:/s.py"}],
              "raw": {"_asset.json": {"type": "raw", "file": "d.csv"}}},
        "b": {"_container.json": {"type": "sample"}},
    })


def test_local_db(proj: Path) -> None:
    from thot.db.local import LocalDB

    db = LocalDB(proj)
    assert [c["_id"] for c in db.containers.find({"type": "sample"})] == [
        str(proj / "a"), str(proj / "b")]
    assert db.assets.find_one({"metadata.batch": True})["file"] == str(proj / "a" / "raw" / "d.csv")
    assert db.assets.find_one({"type": "x"}) is None
    assert LocalDB(proj / "b").assets.find() == []
    assert db.parse_path("root:/x") == str(proj / "x") and db.parse_path("y") == str(proj / "y")


def test_filter_is_a_function_of_the_package() -> None:
    import thot
    from thot.filter import filter as module_filter

    objects = [{"tags": ["x", "y"]}, {"tags": []}, {}]
    # callable as the original's, also once `from thot.filter import ...` made it the module
    assert thot.filter({"tags": ["x"]}, objects) == module_filter({"tags": ["x"]}, objects) == [
        {"tags": ["x", "y"]}]


def test_utilities_edit_scripts_files(proj: Path) -> None:
    from thot.utilities import ThotUtilities

    util = ThotUtilities(str(proj))
    changed = util.add_scripts({"script": "new.py"}, {"type": "sample"})
    assert [c["_id"] for c in changed] == [str(proj / "a"), str(proj / "b")]
    assert json.loads((proj / "a" / "_scripts.json").read_text()) == [
        {"script": "root:/s.py"}, {"script": "new.py"}]
    assert util.add_scripts({"script": "new.py"}, {"type": "sample"}) == []  # already there
    util.remove_scripts("root:/s.py", {"type": "sample"})
    assert json.loads((proj / "a" / "_scripts.json").read_text()) == [{"script": "new.py"}]
    util.set_scripts([{"script": "only.py", "priority": 2}], {"_id": str(proj / "b")})
    assert json.loads((proj / "b" / "_scripts.json").read_text()) == [{"script": "only.py", "priority": 2}]
    with pytest.raises(NotImplementedError):
        util.print_tree()


def test_runner_run_and_the_original_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from thot.runner import run

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    root = make_tree(tmp_path / "p", {
        "_container.json": {},
        "_scripts.json": [{"script": "one.py"}, {"script": "two.py"}],
    })
    for name in ("one", "two"):
        (root / f"{name}.py").write_text(f"open({str(root / (name + '.ran'))!r}, 'a').write('x')\n")
    assert run(root, scripts=["one.py"], tasks=2, ignore_errors=True, verbose=True) == 0
    assert (root / "one.ran").exists() and not (root / "two.ran").exists()
    from corekit import cli

    code, _, err = cli("--state", tmp_path / "s.db", "run", "-r", root, "--scripts",
                       '["root:/two.py"]', "--ignore-errors", "--verbose", "-t")
    assert code == 0, err
    assert (root / "two.ran").read_text() == "x" and (root / "one.ran").read_text() == "x"


def test_scripts_option_must_be_a_list_of_paths(capsys: Any) -> None:
    from thotd.cli.thot import main

    with pytest.raises(SystemExit) as info:
        main(["run", "--scripts", "[1, 2]"])
    assert info.value.code == 2
    assert "JSON list of script paths" in capsys.readouterr().err
