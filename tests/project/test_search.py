"""Search dicts: every rule of the design notes, and properties that tie them together."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from thotd.project.search import SearchError, compile_search, encode, matches

OBJ: dict[str, Any] = {
    "_id": "/p/b1/s1",
    "parent": "/p/b1",
    "name": "sample-1",
    "type": "sample",
    "tags": ["measured", "pilot"],
    "metadata": {"batch": 1, "temp": 25.5, "lab": {"room": 104, "building": "B2"},
                 "flag": True, "ops": ["ada", "chen"], "none": None},
    "children": [],
}


# ---------------------------------------------------------------------------- each rule


def test_empty_search_matches_everything() -> None:
    assert matches(OBJ, {}) and matches(OBJ, None) and matches({}, {})


def test_scalar_equality() -> None:
    assert matches(OBJ, {"type": "sample"})
    assert not matches(OBJ, {"type": "batch"})
    assert matches(OBJ, {"metadata.batch": 1})
    assert matches(OBJ, {"metadata.batch": 1.0})
    assert not matches(OBJ, {"metadata.batch": "1"})
    assert not matches(OBJ, {"missing": "x"})


def test_bool_and_int_compare_as_in_python() -> None:
    """``1 == True``: in Python and in every original release."""
    assert matches(OBJ, {"metadata.flag": True})
    assert matches(OBJ, {"metadata.flag": 1})
    assert matches({"n": 1}, {"n": True})
    assert matches({"n": 0}, {"n": False}) and not matches({"n": 0}, {"n": True})
    assert matches({"n": [1, 2]}, {"n": True})
    assert matches({"n": True}, {"n": {"$in": [1]}}) and matches({"n": True}, {"n": {"$gt": 0}})


def test_all_keys_must_match() -> None:
    assert matches(OBJ, {"type": "sample", "name": "sample-1"})
    assert not matches(OBJ, {"type": "sample", "name": "sample-2"})


def test_scalar_against_a_list_value_is_membership() -> None:
    assert matches(OBJ, {"tags": "pilot"})
    assert not matches(OBJ, {"tags": "blind"})


def test_list_is_contained_in_the_objects_list() -> None:
    assert matches(OBJ, {"tags": ["pilot"]})
    assert matches(OBJ, {"tags": ["pilot", "measured"]})
    assert matches(OBJ, {"tags": []})
    assert not matches(OBJ, {"tags": ["pilot", "blind"]})
    assert not matches(OBJ, {"type": ["sample"]})  # not a list in the object
    assert not matches(OBJ, {"missing": []})


def test_compiled_regex_searches_strings() -> None:
    assert matches(OBJ, {"name": re.compile(r"ple-\d")})  # search, not match
    assert not matches(OBJ, {"name": re.compile(r"^ple")})
    assert matches(OBJ, {"name": re.compile("SAMPLE", re.I)})
    assert not matches(OBJ, {"metadata.batch": re.compile("1")})  # not a string
    assert not matches(OBJ, {"missing": re.compile("")})


def test_callable_condition() -> None:
    assert matches(OBJ, {"metadata.temp": lambda v: v > 20})
    assert not matches(OBJ, {"metadata.temp": lambda v: v > 30})
    seen: list[Any] = []
    assert not matches(OBJ, {"missing": lambda v: seen.append(v) or True})
    assert seen == []  # never called for a key the object does not have
    assert matches(OBJ, {"metadata.none": lambda v: v is None})


@pytest.mark.parametrize(
    ("cond", "expected"),
    [
        ({"$eq": 1}, True), ({"$eq": 2}, False),
        ({"$ne": 2}, True), ({"$ne": 1}, False),
        ({"$in": [0, 1]}, True), ({"$in": [2, 3]}, False), ({"$in": []}, False),
        ({"$nin": [2, 3]}, True), ({"$nin": [1]}, False),
        ({"$exists": True}, True), ({"$exists": False}, False),
        ({"$gt": 0}, True), ({"$gt": 1}, False),
        ({"$gte": 1}, True), ({"$gte": 1.5}, False),
        ({"$lt": 2}, True), ({"$lt": 1}, False),
        ({"$lte": 1}, True), ({"$lte": 0}, False),
        ({"$gt": 0, "$lt": 2}, True), ({"$gt": 0, "$lt": 1}, False),
        ({"$gt": "a"}, False),  # incomparable types: no match, no crash
        ({"$gt": True}, False),
    ],
)
def test_operators_on_a_number(cond: dict[str, Any], expected: bool) -> None:
    assert matches(OBJ, {"metadata.batch": cond}) is expected


def test_operators_on_missing_and_null() -> None:
    assert matches(OBJ, {"missing": {"$exists": False}})
    assert not matches(OBJ, {"missing": {"$exists": True}})
    assert matches(OBJ, {"metadata.none": {"$exists": True}})
    assert matches(OBJ, {"missing": {"$ne": 1}})
    assert matches(OBJ, {"missing": {"$nin": [1]}})
    assert not matches(OBJ, {"missing": {"$gt": 0}})
    assert not matches(OBJ, {"metadata.none": {"$lt": 5}})
    # a missing key is not None (the original's rule), except for $ne/$nin/$exists above
    assert not matches(OBJ, {"missing": {"$eq": None}})
    assert not matches(OBJ, {"missing": None})
    assert not matches(OBJ, {"missing": {"$in": [None]}})
    assert matches(OBJ, {"metadata.none": None})
    assert matches(OBJ, {"metadata.none": {"$eq": None}})


def test_regex_operator_and_options() -> None:
    assert matches(OBJ, {"name": {"$regex": r"-\d$"}})
    assert not matches(OBJ, {"name": {"$regex": "SAMPLE"}})
    assert matches(OBJ, {"name": {"$regex": "SAMPLE", "$options": "i"}})
    assert matches(OBJ, {"name": {"$regex": re.compile("sam")}})
    with pytest.raises(SearchError):
        compile_search({"name": {"$regex": "("}})
    with pytest.raises(SearchError):
        compile_search({"name": {"$regex": "x", "$options": "q"}})
    with pytest.raises(SearchError):
        compile_search({"name": {"$options": "i"}})


def test_in_on_list_values_and_strings() -> None:
    assert matches(OBJ, {"tags": {"$in": ["blind", "pilot"]}})
    assert not matches(OBJ, {"tags": {"$in": ["blind"]}})
    assert matches(OBJ, {"type": {"$in": ["batch", "sample"]}})
    assert matches(OBJ, {"tags": {"$ne": "blind"}})
    assert not matches(OBJ, {"tags": {"$ne": "pilot"}})


def test_sub_document_is_exact_equality() -> None:
    """As 0.0.2 and 0.2.3 (and MongoDB); dotted keys are the way to match one field."""
    assert matches(OBJ, {"metadata.lab": {"room": 104, "building": "B2"}})
    assert matches(OBJ, {"metadata.lab": {"building": "B2", "room": 104.0}})
    assert not matches(OBJ, {"metadata.lab": {"room": 104}})
    assert not matches(OBJ, {"metadata": {"batch": 1}})
    assert matches(OBJ, {"metadata": dict(OBJ["metadata"])})
    assert not matches(OBJ, {"metadata": {"batch": {"$in": [1], "$where": "x"}}})
    assert not matches(OBJ, {"name": {"x": 1}})  # not a document
    assert not matches(OBJ, {"missing": {"x": 1}})


def test_dotted_keys() -> None:
    assert matches(OBJ, {"metadata.lab.room": 104})
    assert matches(OBJ, {"metadata.lab.building": re.compile("^B")})
    assert matches(OBJ, {"tags.0": "measured"})
    assert matches(OBJ, {"tags.-1": "pilot"})
    assert not matches(OBJ, {"tags.5": "pilot"})
    assert not matches(OBJ, {"metadata.lab.room.x": 1})
    assert matches(OBJ, {"_id": "/p/b1/s1", "parent": "/p/b1"})


@pytest.mark.parametrize(
    "search",
    [
        {"metadata.batch": {"$foo": 1}},
        {"$or": [{"type": "a"}]},
        {"type": {"$in": 5}},
        {"tags": {"$nin": "pilot"}},
    ],
)
def test_unknown_operator_or_bad_operand_raises(search: dict[str, Any]) -> None:
    with pytest.raises(SearchError):
        compile_search(search)
    with pytest.raises(SearchError):
        matches({}, search)  # an error even when no object would be looked at


def test_search_errors_are_type_errors_too() -> None:
    """The original raised TypeError for these: scripts catching it still do."""
    for search in ({"tags": {"$foo": 1}}, {"tags": {"$in": "x"}}):
        with pytest.raises(TypeError):
            compile_search(search)
        with pytest.raises(ValueError):
            compile_search(search)


def test_search_must_be_a_dict() -> None:
    with pytest.raises(SearchError):
        compile_search([("type", "x")])  # type: ignore[arg-type]
    with pytest.raises(SearchError):
        compile_search({1: "x"})  # type: ignore[dict-item]


def test_encode_regex_and_callable() -> None:
    enc, opaque = encode({"name": re.compile("^s", re.I | re.M), "type": "x"})
    assert enc == {"name": {"$regex": "^s", "$options": "im"}, "type": "x"}
    assert not opaque
    enc, opaque = encode({"name": {"$regex": re.compile("a"), "$ne": "b"}})
    assert enc == {"name": {"$regex": "a", "$ne": "b"}} and not opaque
    enc, opaque = encode({"metadata.x": lambda v: True})
    assert opaque and "$opaque" in enc["metadata.x"]
    assert encode(None) == ({}, False)
    json.dumps(encode({"tags": ("a", "b"), "n": {"$in": {1}}})[0])


# ---------------------------------------------------------------------------- properties

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.5, 1.0, 2.5]),
    st.sampled_from(["a", "b", "ab", "B", ""]),
)
tag = st.sampled_from(["a", "b", "c", "d", "e"])
values = st.one_of(scalars, st.lists(scalars, max_size=3))
objects = st.fixed_dictionaries(
    {"name": st.sampled_from(["sample-1", "Sample-2", "batch", "x\ny"]),
     "type": st.sampled_from(["raw", "stats", "sample"]),
     "tags": st.lists(tag, max_size=4)},
    optional={"metadata": st.dictionaries(st.sampled_from(["x", "y", "z"]), values, max_size=3),
              "n": scalars},
)


@given(st.lists(tag, max_size=5), st.lists(tag, max_size=5))
def test_tag_list_matches_iff_subset(tags: list[str], wanted: list[str]) -> None:
    assert matches({"tags": tags}, {"tags": wanted}) == (set(wanted) <= set(tags))


@given(objects, st.sampled_from(["n", "metadata.x", "tags", "name", "missing"]),
       st.lists(scalars, max_size=4))
def test_in_and_nin_are_complements(obj: dict[str, Any], key: str, choices: list[Any]) -> None:
    assert matches(obj, {key: {"$in": choices}}) != matches(obj, {key: {"$nin": choices}})


@given(objects, st.sampled_from(["n", "metadata.x", "metadata.y", "tags", "type", "missing"]),
       scalars)
def test_ne_is_the_complement_of_equality(obj: dict[str, Any], key: str, value: Any) -> None:
    equal = matches(obj, {key: value})
    assert matches(obj, {key: {"$eq": value}}) == equal
    assert matches(obj, {key: {"$ne": value}}) != equal
    assert matches(obj, {key: {"$in": [value]}}) == equal


@given(objects, st.sampled_from(["n", "metadata.x"]), st.integers(-5, 5))
def test_comparisons_agree_with_python(obj: dict[str, Any], key: str, bound: int) -> None:
    from thotd.project.search import lookup

    value = lookup(obj, key)
    numeric = isinstance(value, int | float)  # bool included: True > 0, as in Python
    assert matches(obj, {key: {"$gt": bound}}) == (numeric and value > bound)
    assert matches(obj, {key: {"$lte": bound}}) == (numeric and value <= bound)


patterns = st.sampled_from(["^s", "sample", "[0-9]$", "^$", "a|b", "x.y", "^y", "e-"])
flags = st.sampled_from([0, re.I, re.M, re.S, re.I | re.M | re.S])
regexes = st.builds(re.compile, patterns, flags)
conditions = st.one_of(
    scalars,
    st.lists(tag, max_size=2),
    regexes,
    st.builds(lambda r: {"$regex": r}, regexes),
    st.builds(lambda r, v: {"$regex": r, "$ne": v}, regexes, scalars),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["$eq", "$ne", "$gt", "$lte"]), scalars),
    st.builds(lambda op, v: {op: v}, st.sampled_from(["$in", "$nin"]), st.lists(scalars, max_size=3)),
    st.builds(lambda v: {"$exists": v}, st.booleans()),
    st.builds(lambda v: {"x": v}, scalars),  # a sub-document
)
searches = st.dictionaries(
    st.sampled_from(["name", "type", "tags", "n", "metadata", "metadata.x", "missing"]),
    conditions, max_size=3,
)


@settings(max_examples=300)
@given(searches, st.lists(objects, min_size=1, max_size=5))
def test_encoded_search_evaluates_like_the_original(search: dict[str, Any], objs: list[dict[str, Any]]) -> None:
    encoded, opaque = encode(search)
    assert not opaque
    stored = json.loads(json.dumps(encoded))  # what the run record keeps
    original, again = compile_search(search), compile_search(stored)
    for obj in objs:
        assert original(obj) == again(obj), (search, stored, obj)
