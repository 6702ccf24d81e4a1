"""Modules and names a script or notebook written for the original imports exist in ours and
answer as the release that had them did."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from compatkit import HERE, PROJECT, probe_json, run_original, run_ours
from corekit import make_tree

#: Entry points a release did not have yet: (version, key).
ABSENT = {("0.2.3", "filter"), ("0.2.3", "runner_run")}


def _probe(tmp_path: Path, who: str) -> dict[str, Any]:
    work = tmp_path / who
    make_tree(work / "proj", PROJECT)
    script = [str(HERE / "probe_entry_points.py")]
    done = run_ours(script, work) if who == "ours" else run_original(who, script, work)
    result: dict[str, Any] = probe_json(done)
    return result


@pytest.mark.parametrize("version", ["0.2.3", "0.6.3"])
def test_entry_points_agree(tmp_path: Path, version: str) -> None:
    theirs = _probe(tmp_path, version)
    ours = _probe(tmp_path, "ours")
    for key, value in theirs.items():
        if (version, key) in ABSENT:
            assert value == "absent"
        else:
            assert ours[key] == value, key
