"""Object-file models: lenient where real projects are messy, precise when they are wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from corekit import EXAMPLE, cli
from hypothesis import given, settings
from hypothesis import strategies as st

from thotd.project.index import Index
from thotd.project.model import (
    ASSET_FILE,
    CONTAINER_FILE,
    SCRIPTS_FILE,
    AssetFile,
    ContainerFile,
    ObjectFileError,
    extra_keys,
    json_schemas,
    parse,
)

# ---------------------------------------------------------------------------- lenient


def test_container_extras_and_nulls_load_and_are_kept() -> None:
    raw = {
        "_id": None,
        "name": None,
        "type": "batch",
        "description": None,
        "created": "2020-01-01T00:00:00",
        "roles": [{"user": "ada", "role": "owner"}],
        "parent": None,
        "children": ["a", "b"],
        "tags": None,
        "metadata": None,
    }
    model = parse(CONTAINER_FILE, json.dumps(raw).encode())
    assert isinstance(model, ContainerFile)
    assert model.tags == []
    assert model.metadata == {}
    dumped = model.model_dump(by_alias=True, exclude={"schema_"})
    for key in ("_id", "created", "roles", "parent", "children"):
        assert key in dumped, key
        assert dumped[key] == raw[key]
    assert dumped["type"] == "batch"


def test_asset_nulls_take_defaults() -> None:
    raw = {"file": "data.csv", "creator": None, "creator_type": None, "tags": None,
           "metadata": None, "_id": None, "created": "yesterday"}
    model = parse(ASSET_FILE, json.dumps(raw).encode())
    assert isinstance(model, AssetFile)
    assert model.creator_type is None  # as the original: unset unless a script made it
    assert model.creator is None
    assert model.tags == [] and model.metadata == {}
    assert model.model_dump()["created"] == "yesterday"


def test_scripts_nulls_and_extras() -> None:
    raw = [{"script": "a.py", "priority": None, "autorun": None, "note": "kept"}]
    (assoc,) = parse(SCRIPTS_FILE, json.dumps(raw).encode())
    assert assoc.priority == 0
    assert assoc.autorun is True
    assert assoc.model_dump()["note"] == "kept"


def test_dollar_schema_key_is_allowed_and_not_a_warning() -> None:
    data = json.dumps({"$schema": "./container.schema.json", "tgas": ["x"]}).encode()
    assert extra_keys(parse(CONTAINER_FILE, data)) == ["tgas"]


def test_extras_reach_the_objects_scripts_see(tree: Any) -> None:
    root = tree({
        "_container.json": {"_id": None, "created": "2020-01-01", "roles": [], "tags": None,
                            "children": [], "parent": None, "lab_book": 7},
        "a": {"_asset.json": {"file": "x.csv", "_id": None, "instrument": "xrd"}, "x.csv": "1"},
    })
    index = Index.load(root)
    view = index.view(str(root))
    assert view["created"] == "2020-01-01"
    assert view["lab_book"] == 7
    assert view["roles"] == []
    assert view["tags"] == []
    # Thot's own fields win over stale values carried in the file.
    assert view["_id"] == str(root)
    assert view["parent"] is None
    assert view["children"] == []
    assert view["assets"] == [str(root / "a")]
    asset = index.view(str(root / "a"))
    assert asset["instrument"] == "xrd"
    assert asset["file"] == str(root / "a" / "x.csv")


# ---------------------------------------------------------------------------- errors


def test_error_names_file_json_path_and_reason() -> None:
    data = json.dumps([{"script": "a.py"}, {"script": "b.py", "priority": "high"}]).encode()
    with pytest.raises(ObjectFileError) as info:
        parse(SCRIPTS_FILE, data, "/p/_scripts.json")
    (err,) = info.value.errors
    assert err.path == "/p/_scripts.json"
    assert err.field == "[1].priority"
    assert "number" in err.reason and '"high"' in err.reason
    text = str(info.value)
    assert "/p/_scripts.json" in text and "[1].priority" in text


def test_error_for_missing_required_field() -> None:
    with pytest.raises(ObjectFileError) as info:
        parse(ASSET_FILE, b'{"name": "x"}', "/p/a/_asset.json")
    (err,) = info.value.errors
    assert err.field == "file"
    assert err.reason == "required field is missing"
    # a missing field is pointed at by its object (here the whole file, 1:1)
    assert str(err) == "/p/a/_asset.json:1:1: file: required field is missing"


def test_several_errors_in_one_file_are_all_reported() -> None:
    data = b'{"tags": "raw", "metadata": [1], "name": 3}'
    with pytest.raises(ObjectFileError) as info:
        parse(CONTAINER_FILE, data, "/p/_container.json")
    fields = {e.field for e in info.value.errors}
    assert {"tags", "metadata", "name"} <= fields


def test_nested_error_path() -> None:
    data = b'{"tags": ["ok", 5]}'
    with pytest.raises(ObjectFileError) as info:
        parse(CONTAINER_FILE, data, "f")
    assert [e.field for e in info.value.errors] == ["tags[1]"]


def test_broken_json_gives_line_and_column() -> None:
    data = b'{\n  "name": "x",\n  "type" "sample"\n}\n'
    with pytest.raises(ObjectFileError) as info:
        parse(CONTAINER_FILE, data, "/p/_container.json")
    (err,) = info.value.errors
    assert (err.line, err.column) == (3, 10)
    assert err.field is None
    assert "invalid JSON" in err.reason and "delimiter" in err.reason
    assert str(err).startswith("/p/_container.json:3:10: invalid JSON")


def test_non_utf8_file_is_an_error_not_a_crash() -> None:
    with pytest.raises(ObjectFileError) as info:
        parse(CONTAINER_FILE, b'{"name": "\xff"}', "f")
    assert info.value.errors[0].path == "f"


def test_wrong_top_level_type() -> None:
    with pytest.raises(ObjectFileError) as info:
        parse(SCRIPTS_FILE, b'{"script": "a.py"}', "s")
    assert info.value.errors[0].field == "(top level)"


# ---------------------------------------------------------------------------- schemas


def test_schema_command_writes_three_valid_json_schemas(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    code, stdout, _ = cli("schema", "--out", out)
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["asset.schema.json", "container.schema.json", "scripts.schema.json"]
    assert all(str(out / n) in stdout for n in names)
    schemas = {n: json.loads((out / n).read_text()) for n in names}
    assert schemas["container.schema.json"]["type"] == "object"
    assert schemas["scripts.schema.json"]["type"] == "array"
    assert "file" in schemas["asset.schema.json"]["required"]
    assert "$schema" in schemas["container.schema.json"]["properties"]
    assert schemas["asset.schema.json"]["properties"]["file"]["description"]

    good = {
        "container.schema.json": json.loads((EXAMPLE / "project" / CONTAINER_FILE).read_text()),
        "asset.schema.json": json.loads(
            (EXAMPLE / "project" / "batch-a" / "sample-1" / "times" / ASSET_FILE).read_text()
        ),
        "scripts.schema.json": json.loads((EXAMPLE / "project" / SCRIPTS_FILE).read_text()),
    }
    bad = {
        "container.schema.json": {"tags": "x"},
        "asset.schema.json": {"name": "no file"},
        "scripts.schema.json": [{"priority": 1}],
    }
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - jsonschema ships with the dev environment
        jsonschema = None
    if jsonschema is not None:
        for name, schema in schemas.items():
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            validator = cls(schema)
            assert not list(validator.iter_errors(good[name])), name
            assert list(validator.iter_errors(bad[name])), name
    else:
        # Without jsonschema: at least the pydantic side agrees on good and bad documents.
        for name, schema in schemas.items():
            assert schema == json_schemas()[name]


# ---------------------------------------------------------------------------- round trip

_FIELDS = {"name", "type", "description", "tags", "metadata", "file", "creator",
           "creator_type", "$schema", "schema_"}
_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False) | _text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=8,
)
_extras = st.dictionaries(_text.filter(lambda k: k not in _FIELDS), _json, max_size=4)
_common = {
    "name": st.none() | _text,
    "type": st.none() | _text,
    "description": st.none() | _text,
    "tags": st.none() | st.lists(_text, max_size=4),
    "metadata": st.none() | st.dictionaries(_text, _json, max_size=4),
}
_asset_only = {
    "file": _text.filter(bool),
    "creator": st.none() | _text,
    "creator_type": st.none() | st.sampled_from(["user", "script"]) | _text,
}
_DEFAULTS = {"tags": [], "metadata": {}}


def _doc(fields: dict[str, Any], required: tuple[str, ...] = ()) -> st.SearchStrategy[dict[str, Any]]:
    optional = {k: v for k, v in fields.items() if k not in required}
    return st.builds(
        lambda req, opt, extra: {**extra, **req, **opt},
        st.fixed_dictionaries({k: fields[k] for k in required}),
        st.fixed_dictionaries({}, optional=optional),
        _extras,
    )


def _check_round_trip(filename: str, doc: dict[str, Any]) -> None:
    model = parse(filename, json.dumps(doc).encode())
    dumped = model.model_dump(by_alias=True, exclude={"schema_"})
    for key, value in doc.items():
        assert key in dumped, key
        expected = _DEFAULTS[key] if value is None and key in _DEFAULTS else value
        assert dumped[key] == expected, key
    assert json.loads(json.dumps(dumped)) == dumped  # still plain JSON


@settings(max_examples=150, deadline=None)
@given(_doc(_common))
def test_container_round_trip_keeps_every_field(doc: dict[str, Any]) -> None:
    _check_round_trip(CONTAINER_FILE, doc)


@settings(max_examples=150, deadline=None)
@given(_doc({**_common, **_asset_only}, required=("file",)))
def test_asset_round_trip_keeps_every_field(doc: dict[str, Any]) -> None:
    _check_round_trip(ASSET_FILE, doc)
