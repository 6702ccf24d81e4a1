"""The stdlib reader of object files must agree with the pydantic models wherever it answers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thotd.project import model, objectfile

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False),
                    st.text(max_size=4))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)
field_values = st.one_of(values, st.lists(st.text(max_size=3), max_size=3),
                         st.dictionaries(st.text(max_size=3), values, max_size=3))
keys = st.sampled_from(["name", "type", "description", "tags", "metadata", "file", "creator",
                        "creator_type", "$schema", "_id", "created", "extra", "schema_",
                        "script", "priority", "autorun", "schedule"])
objects = st.dictionaries(keys, field_values, max_size=8)


def _models(filename: str, data: bytes) -> Any:
    try:
        return objectfile.plain(model.parse(filename, data, "x"))
    except model.ObjectFileError:
        return "error"


@settings(max_examples=400)
@given(objects, st.sampled_from([model.CONTAINER_FILE, model.ASSET_FILE]))
def test_fast_reader_agrees_with_models(obj: dict[str, Any], filename: str) -> None:
    data = json.dumps(obj).encode()
    fast = objectfile.fast_load(filename, data)
    if fast is not None:  # where it answers, it answers exactly as the models do
        assert fast == _models(filename, data)


@settings(max_examples=300)
@given(st.lists(objects, max_size=3))
def test_fast_reader_agrees_on_scripts(items: list[dict[str, Any]]) -> None:
    data = json.dumps(items).encode()
    fast = objectfile.fast_load(model.SCRIPTS_FILE, data)
    if fast is not None:
        assert fast == _models(model.SCRIPTS_FILE, data)


@pytest.mark.parametrize(("filename", "text"), [
    (model.CONTAINER_FILE, '{"name": "x", "tags": null, "_id": null, "metadata": {"a": 1}}'),
    (model.ASSET_FILE, '{"file": "a.csv", "creator_type": null, "roles": []}'),
    (model.SCRIPTS_FILE, '[{"script": "a.py"}, {"script": "b.py", "priority": 2, "autorun": false}]'),
])
def test_common_files_take_the_fast_path(filename: str, text: str) -> None:
    assert objectfile.fast_load(filename, text.encode()) == _models(filename, text.encode())


@pytest.mark.parametrize("text", ['{"file": ""}', '{"tags": "x"}', '{"file": "a", "name": 3}',
                                  '{"file": NaN}', '{"file": "a"', '[1]'])
def test_doubtful_files_go_to_the_models(text: str) -> None:
    assert objectfile.fast_load(model.ASSET_FILE, text.encode()) is None
    with pytest.raises(model.ObjectFileError):
        objectfile.load(model.ASSET_FILE, text.encode(), "x")
