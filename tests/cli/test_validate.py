"""``thot validate`` counts files (not errors) and points every error at a line and column,
schema errors included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from corekit import cli, make_tree

from thotd.project.jsonpos import position

TEXT = """{
  "name": "x",
  "scripts": [
     {"script": "a.py"},
     {"script": "b.py", "priority": "high"}
  ],
  "tags": {"a": [1, {"b": "]},{"}]},
  "tags": {"a": [1, {"b": 2}]}
}"""


@pytest.mark.parametrize(("loc", "where"), [
    (("scripts", 1, "priority"), (5, 25)),  # a field: its key
    (("scripts", 1), (5, 6)),  # an item: its value
    (("scripts", 1, "missing"), (5, 6)),  # a missing field: its object
    (("tags", "a", 1, "b"), (8, 22)),  # a repeated key: the last one, which is read
    ((), (1, 1)),
    (("nope",), (1, 1)),
    (("scripts", 7), (3, 3)),  # past the end of the list: the list's key
])
def test_position_of_a_json_path(loc: tuple[int | str, ...], where: tuple[int, int]) -> None:
    assert position(TEXT.encode(), loc) == where


def test_position_of_text_that_is_not_json() -> None:
    assert position(b"\xff{", ("a",)) is None
    assert position('{"a": }', ("a",)) is None


def test_validate_counts_files_and_gives_line_and_column(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "proj", {
        "_container.json": {},
        "_scripts.json": '[{"script": "x.py",\n "priority": "high"}]',
        "a": {"_container.json": '{\n  "name": "a",\n  "metadata": [1],\n  "tags": 3\n}',
              "b": {"_asset.json": '{"type": }'}},
        "c": {"_container.json": {}},
    })
    code, out, _ = cli("validate", root)
    assert code == 1
    assert f"error: {root / '_scripts.json'}:2:2: [0].priority: " in out
    assert f"error: {root / 'a' / '_container.json'}:3:3: metadata: " in out
    assert f"error: {root / 'a' / 'b' / '_asset.json'}:1:10: invalid JSON" in out
    assert out.splitlines()[-1].startswith(
        "5 object files checked: 3 invalid files (4 errors), ")
    code, out, _ = cli("validate", root, "--json")
    report = json.loads(out)
    assert report["files_checked"] == 5 and len(report["invalid_files"]) == 3
    assert {(e["line"], e["column"]) for e in report["errors"]} == {(2, 2), (3, 3), (4, 3),
                                                                    (1, 10)}


def test_validate_of_a_valid_project_says_so(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "proj", {"_container.json": {}, "a": {"_container.json": {}}})
    code, out, _ = cli("validate", root)
    assert code == 0 and out.splitlines()[-1] == "2 object files checked: all valid, 0 warnings"
