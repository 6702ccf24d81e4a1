"""Regex searches have a deadline (issue 11, item 6): ``re`` cannot be stopped, and one
catastrophic pattern froze the daemon. Every regex is matched by the ``regex`` package
under a per-match timeout and a per-search budget; past either, a ``SearchError`` names the
pattern and the limit."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from thotd.project import search
from thotd.project.search import MATCH_TIMEOUT_S, SearchError, compile_search

CATASTROPHIC = r"(x+x+)+y"
SLOW_VALUE = "x" * 5000


@pytest.mark.parametrize("condition", [
    {"$regex": CATASTROPHIC},
    re.compile(CATASTROPHIC),
    {"$regex": re.compile(CATASTROPHIC), "$ne": "z"},
], ids=["$regex", "compiled", "compiled-in-$regex"])
def test_a_catastrophic_match_stops_at_its_timeout(condition: Any) -> None:
    test = compile_search({"name": condition})
    began = time.monotonic()
    with pytest.raises(SearchError) as caught:
        test({"name": SLOW_VALUE})
    assert time.monotonic() - began < MATCH_TIMEOUT_S + 0.5
    message = str(caught.value)
    assert CATASTROPHIC in message and f"{MATCH_TIMEOUT_S:g} s" in message


def test_the_search_as_a_whole_has_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Slow matches that each stay under the per-match timeout still add up: one search
    stops once its regexes used the budget."""
    monkeypatch.setattr(search, "SEARCH_BUDGET_S", 0.2)
    monkeypatch.setattr(search, "MATCH_TIMEOUT_S", 5.0)
    test = compile_search({"name": {"$regex": CATASTROPHIC}})
    began = time.monotonic()
    with pytest.raises(SearchError, match=r"ran out of time: the regexes of one search may take 0.2 s"):
        for _ in range(100):
            test({"name": SLOW_VALUE})
    assert time.monotonic() - began < 1.0
    # A new search (a new question) has a budget of its own.
    assert compile_search({"name": {"$regex": CATASTROPHIC}})({"name": "xxy"})


def test_flags_and_non_strings_are_kept() -> None:
    assert compile_search({"name": re.compile("SAMPLE", re.I)})({"name": "a sample"})
    assert not compile_search({"name": re.compile("^b", re.M)})({"name": "a\nc"})
    assert compile_search({"name": re.compile("^b", re.M)})({"name": "a\nb"})
    assert compile_search({"name": re.compile(r"\w", re.A)})({"name": "a"})
    assert not compile_search({"name": re.compile(r"\w", re.A)})({"name": "é"})
    assert not compile_search({"n": re.compile("1")})({"n": 1})
    with pytest.raises(SearchError, match="bytes pattern"):
        compile_search({"name": re.compile(b"x")})


def test_regex_is_imported_only_for_a_regex_search() -> None:
    code = ("import sys, thot\n"
            "from thotd.project.search import compile_search\n"
            "compile_search({'name': 'x', 'n': {'$gt': 1}})({'name': 'x', 'n': 2})\n"
            "assert 'regex' not in sys.modules, 'imported too early'\n"
            "compile_search({'name': {'$regex': 'x'}})\n"
            "assert 'regex' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# Ordinary patterns: built from atoms that mean the same in both engines.
ATOMS = ["a", "b", "x", ".", "^", "$", "[ab]", "[^a]", r"\d", r"\w", r"\s", r"\b", "-", " "]
QUANTIFIERS = ["", "", "*", "+", "?", "{1,2}", "*?"]
piece = st.builds(lambda atom, q: atom + q if atom not in "^$" and atom != r"\b" else atom,
                  st.sampled_from(ATOMS), st.sampled_from(QUANTIFIERS))
pattern = st.lists(piece, min_size=1, max_size=5).map("".join) | st.builds(
    lambda a, b: f"({a}|{b})", st.lists(piece, min_size=1, max_size=2).map("".join),
    st.lists(piece, min_size=1, max_size=2).map("".join))
text = st.text(alphabet="abx1 -\né_B", max_size=12)
flag = st.sampled_from([0, re.I, re.M, re.S, re.A, re.I | re.M | re.S])


@settings(max_examples=400, deadline=None)
@given(pattern, text, flag)
def test_regex_finds_what_re_finds(pat: str, value: str, flags: int) -> None:
    try:
        expected = re.compile(pat, flags).search(value)
    except re.error:
        return
    converted = sum(new for old, new in search._regex_flags(regex) if flags & old)
    found = regex.compile(pat, converted).search(value, timeout=1)
    assert (found and found.span()) == (expected and expected.span()), (pat, value, flags)
    assert compile_search({"v": re.compile(pat, flags)})({"v": value}) == (expected is not None)
