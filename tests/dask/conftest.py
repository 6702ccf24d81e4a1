"""Fixtures of the Dask executor tests: one real cluster per module (see :mod:`daskkit`)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

pytest.importorskip("distributed", reason="the [dask] extra is not installed")

from daskkit import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A scheduler and two workers (``w1``, ``w2``) on loopback, stopped at the end."""
    c = Cluster(tmp_path_factory.mktemp("dask"))
    try:
        c.start_scheduler()
        c.start_worker("w1")
        c.start_worker("w2")
        yield c
    finally:
        c.close()


@pytest.fixture
def two_workers(cluster: Cluster) -> Cluster:
    """The module's cluster with its scheduler and ``w1``, ``w2`` running (a test before
    may have killed one)."""
    if cluster.scheduler is None or cluster.scheduler.poll() is not None:
        cluster.start_scheduler()
    for name in ("w1", "w2"):
        proc = cluster.workers.get(name)
        if proc is None or proc.poll() is not None:
            cluster.workers.pop(name, None)
            cluster.start_worker(name)
    return cluster
