"""Object files nested too deep (issue 11, item 5): refused with a clear error before any
parser recurses into them.

200,000 ``[`` raised ``RecursionError`` out of the loader: the index load crashed (the
daemon could not start, ``thot validate`` died with a traceback) and a running daemon
dropped the batch. Now it is an invalid file that says where and why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from thotd.project import model
from thotd.project.index import Index
from thotd.project.objectfile import CONTAINER_FILE, SCRIPTS_FILE, ObjectFileError, load
from thotd.project.vocabulary import MAX_DEPTH, check_depth


def nested(depth: int) -> bytes:
    """A container file whose metadata nests ``depth`` levels in all (the object's braces
    count)."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return ('{"metadata": {"deep": ' + inner + "}}").encode()


def test_nesting_past_the_limit_is_an_invalid_file_with_where_and_why() -> None:
    with pytest.raises(ObjectFileError) as caught:
        load(CONTAINER_FILE, b"[" * 200_000, "p/_container.json")
    (error,) = caught.value.errors
    assert error.reason == f"invalid JSON: nested deeper than {MAX_DEPTH} levels"
    assert (error.line, error.column) == (1, MAX_DEPTH + 1)
    assert str(error).startswith("p/_container.json:1:201: ")


def test_the_limit_is_the_same_for_the_models() -> None:
    """``model.parse`` (what ``thot validate`` and odd files reach) refuses the same files,
    instead of a ``RecursionError`` while describing pydantic's own refusal."""
    with pytest.raises(ObjectFileError, match="nested deeper than"):
        model.parse(SCRIPTS_FILE, b"[" * 300 + b"]" * 300)
    with pytest.raises(ObjectFileError, match="nested deeper than"):
        model.parse(CONTAINER_FILE, nested(MAX_DEPTH + 1))


def test_nesting_up_to_the_limit_reads() -> None:
    props = load(CONTAINER_FILE, nested(MAX_DEPTH))
    assert isinstance(props["metadata"]["deep"], list)
    with pytest.raises(ObjectFileError):
        load(CONTAINER_FILE, nested(MAX_DEPTH + 1))


def test_brackets_in_strings_do_not_count() -> None:
    doc = {"name": "[" * 500, "tags": ["{" * 300, 'a "quoted" [ \\'], "metadata": {"x": "]]"}}
    assert load(CONTAINER_FILE, json.dumps(doc).encode())["name"] == "[" * 500
    check_depth(b'"' + b"[" * 500, "x")  # a string never closed: nothing after it nests


def test_lines_and_columns_count_from_one() -> None:
    data = b'{\n  "metadata":\n    ' + b"[" * 300
    with pytest.raises(ObjectFileError) as caught:
        check_depth(data, "f")
    (error,) = caught.value.errors
    # The brace on line 1 is level 1; the 200th bracket (column 5 + 199) is one too many.
    assert (error.line, error.column) == (3, 5 + MAX_DEPTH - 1)


def test_the_index_loads_with_such_a_file_and_lists_it(tmp_path: Path) -> None:
    (tmp_path / CONTAINER_FILE).write_text("{}")
    deep = tmp_path / "deep"
    deep.mkdir()
    (deep / CONTAINER_FILE).write_bytes(b"[" * 200_000)
    index = Index.load(str(tmp_path))
    assert [e.reason for e in index.errors()] == [
        f"invalid JSON: nested deeper than {MAX_DEPTH} levels"]
