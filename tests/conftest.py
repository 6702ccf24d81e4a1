"""Shared fixtures of the core tests: project trees from dict specs in ``tmp_path``, a fresh
state db per test, a G×S project. The helpers live in :mod:`corekit`.

Nothing here is autouse except the scrub of ``THOT_*`` variables, so a test run started from
inside a Thot script (or a shell that exported them) cannot leak an active container.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from corekit import THOT_VARS, make_gs, make_tree
from inprocess import in_daemon, run_dir  # noqa: F401 - the in-process daemon's fixtures


@pytest.fixture(autouse=True)
def _no_thot_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in THOT_VARS:
        # set, then deleted: the undo removes what the test sets (a project made in-process
        # sets THOT_ORIGINAL_DIR, which would leak into every later test's scripts)
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)


@pytest.fixture
def tree(tmp_path: Path) -> Callable[..., Path]:
    """``tree(spec, name="proj")`` writes a spec under ``tmp_path/name`` and returns it."""

    def build(spec: Mapping[str, Any], name: str = "proj") -> Path:
        return make_tree(tmp_path / name, spec)

    return build


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A fresh state database path (its run logs go beside it, out of the project)."""
    folder = tmp_path / "state"
    folder.mkdir()
    return folder / "state.sqlite3"


@pytest.fixture
def gs(tmp_path: Path) -> Path:
    """A 3×3 G×S project (not run yet); returns the project root."""
    return make_gs(tmp_path / "gs", 3, 3)
