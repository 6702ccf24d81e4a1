"""Files the originals accept must not block a subtree: they load (a folder with both object
files is skipped, as the originals skip it) and ``thot validate`` warns about them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from compatkit import HERE, VERSIONS, probe_json, run_original, run_ours
from corekit import cli, make_tree

_TREE: dict[str, Any] = {
    "_container.json": {},
    "both": {"_container.json": {}, "_asset.json": {"file": "x"},
             "inner": {"_container.json": {}}},
    "tagged": {"_container.json": {"tags": "x"}, "raw": {"_asset.json": {"file": "d.csv"}}},
    "named": {"_container.json": {"name": 5}},
}


@pytest.mark.parametrize("version", VERSIONS)
def test_the_originals_and_ours_see_the_same_objects(tmp_path: Path, version: str) -> None:
    seen = {}
    for who in ("ours", version):
        work = tmp_path / who
        make_tree(work / "proj", _TREE)
        script = [str(HERE / "probe_tolerated.py")]
        done = run_ours(script, work) if who == "ours" else run_original(who, script, work)
        seen[who] = probe_json(done)
    assert seen["ours"] == seen[version]
    assert seen["ours"]["containers"] == [".", "named", "tagged"]  # relative to proj
    assert seen["ours"]["tags_x"] == ["tagged"] and seen["ours"]["name_5"] == ["named"]


def test_validate_warns_and_does_not_fail(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "proj", _TREE)
    code, out, err = cli("validate", root)
    assert code == 0, out + err
    warnings = [line for line in out.splitlines() if line.startswith("warning:")]
    assert not [line for line in out.splitlines() if line.startswith("error:")]
    assert any("both" in w and str(root / "both") in w for w in warnings)
    assert any("tags" in w and "kept as written" in w for w in warnings)
    assert any("name" in w and "kept as written" in w for w in warnings)
