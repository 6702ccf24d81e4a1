"""Fixtures for the daemon tests, from the shared harness (``daemonkit``): a real ``thotd``
process and a small G×S project."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from corekit import make_gs
from daemonkit import Daemon, make_daemon


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    """A configured, not yet started daemon (``daemon.start()``)."""
    with make_daemon(tmp_path, daemon={"shutdown_grace_s": 5}) as d:
        yield d


@pytest.fixture
def gs(tmp_path: Path) -> Path:
    """A 2×2 G×S project: 4 sample runs, 2 group runs, 1 summary run."""
    return make_gs(tmp_path / "work", 2, 2)
