"""3. (continued) Fuzzing, for a fixed budget: the object-file loader, an index built from
fuzzed object files, and searches asked of a running daemon.

* The loader either returns plain data or raises ``ObjectFileError`` (file, field, reason):
  never another exception, whatever the bytes.
* An index over a tree of fuzzed object files loads, lists its errors and answers searches.
* A search sent to the daemon's ``query`` method gets the same objects as the same search
  on a freshly loaded index, or, exactly when that raises ``SearchError``, an
  invalid-params error; never an internal error, and the daemon keeps answering.
"""

from __future__ import annotations

import json
import os
import shutil
import string
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from thotd.project.index import Index
from thotd.project.objectfile import ASSET_FILE, CONTAINER_FILE, SCRIPTS_FILE, ObjectFileError, load
from thotd.project.search import SearchError

from ._faults import Daemon, Prober, Report, make_gs, pick

FILES = (CONTAINER_FILE, ASSET_FILE, SCRIPTS_FILE)
KEYS = ["name", "type", "description", "tags", "metadata", "file", "creator", "creator_type",
        "$schema", "_id", "script", "priority", "autorun", "schedule", "parent", "children"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
           | st.floats() | st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=15,
)
object_docs = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), json_values, max_size=8)


def _bytes_for(doc: Any, mangle: int) -> bytes:
    text = json.dumps(doc, allow_nan=True)
    if mangle == 1:
        text = text[: max(0, len(text) - 3)]  # cut short
    elif mangle == 2:
        text = text.replace('"', "'", 1)
    data = text.encode("utf-8", "surrogatepass")
    if mangle == 3:
        data = b"\xef\xbb\xbf" + data  # a BOM
    return data


plausible = st.fixed_dictionaries(
    {},
    optional={
        "name": st.none() | st.text(max_size=10), "type": st.none() | st.text(max_size=6),
        "description": st.none() | st.text(max_size=10),
        "tags": st.none() | st.lists(st.text(max_size=5), max_size=3),
        "metadata": st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "file": st.text(min_size=1, max_size=10), "creator": st.none() | st.text(max_size=5),
        "creator_type": st.none() | st.sampled_from(["user", "script"]),
        "_id": st.none(), "created": st.text(max_size=10), "$schema": st.text(max_size=10),
    },
)
associations = st.lists(st.fixed_dictionaries(
    {"script": st.text(min_size=1, max_size=12)},
    optional={"priority": st.none() | st.integers(-5, 5) | st.floats(allow_nan=False),
              "autorun": st.none() | st.booleans(), "schedule": st.none() | st.text(max_size=12)},
), max_size=3)

documents = st.one_of(
    st.binary(max_size=200),
    st.builds(_bytes_for, plausible | associations, st.just(0)),
    st.builds(_bytes_for, plausible | associations, st.integers(1, 3)),
    st.builds(_bytes_for, object_docs | st.lists(object_docs, max_size=3) | json_values,
              st.integers(0, 4)),
)


def test_fuzz_object_file_loader(reliability: Report) -> None:
    budget = pick(1500, 15000)
    row = reliability.row(f"fuzzed object files through the loader (hypothesis, {budget} examples)")
    outcomes = {"parsed": 0, "error": 0}

    @settings(max_examples=budget, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(FILES), data=documents)
    def check(name: str, data: bytes) -> None:
        try:
            out = load(name, data, f"/fuzz/{name}")
        except ObjectFileError as exc:
            outcomes["error"] += 1
            assert exc.errors and all(e.path == f"/fuzz/{name}" and e.reason for e in exc.errors)
            return
        outcomes["parsed"] += 1
        json.dumps(out, allow_nan=True, default=str)  # plain data
        assert isinstance(out, list if name == SCRIPTS_FILE else dict)

    try:
        check()
    finally:
        row.tries = budget
        row.notes = (f"{outcomes['parsed']} parsed, {outcomes['error']} refused with "
                     "ObjectFileError (file, JSON path, reason); no other exception")
    # Reaching here means no example raised anything else.


def test_fuzz_index_over_fuzzed_files(tmp_path: Path, reliability: Report) -> None:
    budget = pick(120, 1200)
    row = reliability.row(f"index over trees of fuzzed object files (hypothesis, {budget} trees)")
    counts = {"objects": 0, "errors": 0}
    trees = st.lists(st.tuples(st.sampled_from(FILES), documents, st.integers(0, 3)),
                     min_size=1, max_size=6)

    @settings(max_examples=budget, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(files=trees)
    def check(files: list[tuple[str, bytes, int]]) -> None:
        root = tmp_path / "tree"
        if root.exists():
            shutil.rmtree(root)
        root.mkdir()
        (root / CONTAINER_FILE).write_text("{}")
        folders = [root]
        for i, (name, data, depth) in enumerate(files):
            folder = folders[min(depth, len(folders) - 1)] / f"f{i}"
            folder.mkdir()
            (folder / name).write_bytes(data)
            folders.append(folder)
        index = Index.load(root)
        counts["objects"] += len(index.nodes)
        counts["errors"] += len(index.errors())
        for err in index.errors():
            assert err.reason and err.path.startswith(str(root))
        for kind in ("container", "asset"):
            for obj in index.find(kind, {}, str(root)):
                json.dumps(dict(obj), allow_nan=True, default=str)
        index.containers_postorder()
        index.warnings()

    try:
        check()
    finally:
        row.tries = budget
        row.notes = (f"{counts['objects']} objects loaded, {counts['errors']} errors reported; "
                     "every tree loaded and answered searches")


# ---------------------------------------------------------------------------- searches

_paths = st.sampled_from(
    ["name", "type", "tags", "tags.0", "tags.-1", "tags.--1", "tags.\u00b2", "tags." + "9" * 5000,
     "metadata", "metadata.group", "metadata.sample", "metadata.project", "metadata.x.y",
     "_id", "parent", "file", "notes", "children", "assets", "scripts.0.priority", "nope"]
) | st.text(alphabet=string.ascii_lowercase + "._-0", max_size=12)
_operands = json_values | st.text(alphabet="ab.*+?()[]^$|\\{}", max_size=8)
_operators = st.dictionaries(
    st.sampled_from(["$eq", "$ne", "$in", "$nin", "$exists", "$regex", "$options", "$gt",
                     "$gte", "$lt", "$lte", "$bogus"]),
    _operands, min_size=1, max_size=3)
_conditions = st.one_of(scalars, st.lists(scalars, max_size=3), _operators,
                        st.dictionaries(st.text(max_size=5), scalars, max_size=2))
searches = st.dictionaries(_paths, _conditions, max_size=3)


def test_fuzz_search_through_the_daemon(fd: Daemon, tmp_path: Path, reliability: Report) -> None:
    budget = pick(400, 4000)
    project = make_gs(tmp_path / "work", 2, 2)
    fd.start()
    fd.add(project)
    local = Index.load(project)
    starts = [str(project), str(project / "group-0"), str(project / "group-1" / "sample-001")]
    row = reliability.row(f"random searches to the daemon's query method (hypothesis, {budget})")
    tally = {"matched": 0, "empty": 0, "refused": 0}
    wrong: list[str] = []

    @settings(max_examples=budget, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(search=searches, kind=st.sampled_from(["container", "asset"]),
           start=st.sampled_from(starts))
    def check(search: dict[str, Any], kind: str, start: str) -> None:
        try:
            json.dumps(search, allow_nan=False)
        except ValueError:
            return  # NaN cannot go over JSON-RPC
        try:
            want: list[str] | None = [o["_id"] for o in local.find(kind, search, start)]
        except SearchError:
            want = None
        try:
            got = fd.rpc("query", {"project": str(project), "start": start, "kind": kind,
                                   "search": search}, timeout=30)
            ids: list[str] | None = [o["_id"] for o in got["objects"]]
        except Exception as exc:  # noqa: BLE001 - compared below
            code = getattr(exc, "code", None)
            if code != -32602:
                wrong.append(f"{kind} {start} {json.dumps(search)[:200]}: {exc}")
                return
            ids = None
        if ids != want:
            wrong.append(f"{kind} {start} {json.dumps(search)[:200]}: daemon {ids} local {want}")
        tally["refused" if ids is None else ("matched" if ids else "empty")] += 1

    with Prober(fd.socket) as prober:
        try:
            check()
        finally:
            row.tries = budget
            row.lost = len(wrong)
            row.worst(prober)
            row.notes = (f"{tally['matched']} matched, {tally['empty']} matched nothing, "
                         f"{tally['refused']} refused with -32602 exactly where a local search "
                         "raises SearchError; daemon answers = local answers")
    assert not wrong, "\n".join(wrong[:10])
    assert fd.alive()
    _ = os


# ---------------------------------------------------------------------------- run records

_odd_paths = st.text(alphabet="/ab\0.\udcff", max_size=12)
_record_lines = st.one_of(
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"") + b"\n"),
    st.builds(  # well-formed events carrying odd paths
        lambda event: (json.dumps(event) + "\n").encode("utf-8", "surrogatepass"),
        st.fixed_dictionaries({"event": st.just("output"), "id": _odd_paths, "file": _odd_paths})
        | st.fixed_dictionaries({
            "event": st.just("query"), "kind": st.sampled_from(["asset", "container"]),
            "search": st.none() | st.dictionaries(st.sampled_from(["type", "tags.--1"]), scalars,
                                                  max_size=2),
            "opaque": st.booleans(), "ids": st.lists(_odd_paths, max_size=2),
            "objects": st.dictionaries(_odd_paths, st.fixed_dictionaries(
                {"fp": st.none() | st.text(max_size=4), "file": st.none() | _odd_paths,
                 "stat": st.none() | st.lists(st.integers(), max_size=2)}), max_size=2)}),
    ),
    st.builds(
        lambda kind, body: (json.dumps({"event": kind, **body}, allow_nan=True) + "\n").encode(
            "utf-8", "surrogatepass"),
        st.sampled_from(["query", "output", "library", "other"]),
        st.dictionaries(
            st.sampled_from(["kind", "search", "opaque", "ids", "objects", "id", "file", "stat"]),
            json_values | st.lists(st.text(alphabet="/ab\0.", max_size=12), max_size=3)
            | st.dictionaries(st.text(alphabet="/ab", max_size=6), st.dictionaries(
                st.sampled_from(["fp", "file", "stat"]), json_values, max_size=3), max_size=2)
            | st.text(alphabet="/ab\0.", max_size=12),
            max_size=5),
    ),
)


def test_fuzz_run_records(tmp_path: Path, reliability: Report) -> None:
    """A script writes its own run record: whatever it writes, finishing the run works and
    the engine can say whether it is stale."""
    from thotd.engine.staleness import Engine
    from thotd.engine.state import Store

    budget = pick(400, 4000)
    row = reliability.row(f"fuzzed run records read back by the engine (hypothesis, {budget})")
    project = make_gs(tmp_path / "work", 1, 1)
    engine = Engine(Index.load(project), Store(tmp_path / "state.sqlite3"))
    key = (str(project), str(tmp_path / "work" / "analysis" / "summary.py"))
    tally = {"opaque": 0, "precise": 0}

    @settings(max_examples=budget, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(lines=st.lists(_record_lines, max_size=6))
    def check(lines: list[bytes]) -> None:
        log, record = engine.begin(key, ["fuzz"])
        Path(record).write_bytes(b"".join(lines))
        engine.complete(key, status="ok", exit_code=0, started=0.0, finished=1.0,
                        log=str(log), record_path=record, reasons=["fuzz"])
        engine.reasons(key)
        engine.edges()
        rec = engine.rows[key].record or {}
        tally["opaque" if rec.get("opaque") else "precise"] += 1

    try:
        check()
    finally:
        row.tries = budget
        row.notes = (f"{tally['precise']} kept as precise records, {tally['opaque']} taken as "
                     "opaque (whole subtree as input); finishing the run never failed")
