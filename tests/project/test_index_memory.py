"""What an index costs per object, pinned loosely so that a change that bloats every object
is seen (issue 12: a 30,000-sample project must stay under 250 MB in the daemon).

Measured with ``tracemalloc`` on a generated tree like the bench's (``bench/gen.py``
``make_flat``: object files as real projects write them, metadata at every level, notes on
a few). Bytes per object are steady from a few hundred objects up, so a small tree tells.
The bounds are ~1.5x what the index costs now (2026-12-02: ~1,650 bytes an object loaded,
~900 more for the views ``find_*`` hands out): far from noise, well below what it cost
before the index was made compact (~2,770 loaded).
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import corekit  # noqa: F401 - puts bench/ on sys.path
import gen
import pytest

from thotd.project.index import Index

#: Bytes an object of a loaded index may cost (now ~1,650).
LOADED_BOUND = 2_500
#: And with the view each hands out once a ``find_*`` returned it (now ~2,550).
VIEWED_BOUND = 3_900


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("memory") / "project"
    gen.make_flat(root, 600, 600, depth=3, seed=1)
    return root


@pytest.fixture
def traced() -> Iterator[None]:
    gc.collect()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def _used() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def test_bytes_per_object_of_a_loaded_index(tree: Path, traced: None) -> None:
    Index.load(tree)  # first load: imports and caches of the modules are not the index's
    before = _used()
    index = Index.load(tree)
    loaded = _used() - before
    count = len(index.nodes)
    assert count == 1200
    per_object = loaded / count
    assert per_object < LOADED_BOUND, f"{per_object:.0f} bytes an object loaded"
    index.find_containers({})
    index.find_assets({})
    per_object = (_used() - before) / count
    assert per_object < VIEWED_BOUND, f"{per_object:.0f} bytes an object with its view"


def test_fingerprints_and_searches_keep_no_views(tree: Path, traced: None) -> None:
    """The daemon fingerprints every object and its scripts' searches walk every one:
    neither keeps a view of an object it does not hand out."""
    index = Index.load(tree)
    for nid in index.nodes:
        index.fingerprint(nid)
    index.query_ids("asset", {"type": "no such type"}, index.root)
    assert not any(n._view is not None for n in index.nodes.values())
    found = index.query_ids("asset", {"type": "raw"}, index.root)
    assert found
    index.answer("asset", {"type": "raw"}, index.root)
    kept = {n.id for n in index.nodes.values() if n._view is not None}
    assert kept == set(found)


def test_keys_and_common_values_are_shared(tree: Path) -> None:
    """One string per distinct key and common value, not one per object file."""
    index = Index.load(tree)
    assets = [n for n in index.nodes.values() if n.kind == "asset"]
    keys = {id(k) for n in assets for k in n.props}
    assert len(keys) == len({k for n in assets for k in n.props})
    types = {id(n.props["type"]) for n in assets}
    assert len(types) == len({n.props["type"] for n in assets})
