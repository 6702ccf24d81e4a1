"""Search dicts: compile once, then match many objects.

A search maps dotted keys (``metadata.batch``) to conditions; all must hold. A condition is
a scalar (equality; for a list value, membership, as in MongoDB), a list (every element is
in the object's list), a compiled regex (``search`` finds a match in a string), a callable
(true for the value), a dict of ``$`` operators (all hold) or a dict without operators (the
value equals it exactly). An unknown operator is an error at compile time, not a silent
miss.

What the original Thot did, kept (docs/decisions.md): values compare as in Python, so
``1 == True == 1.0``; a key the object file does not set is *missing*, not ``None``, and a
missing key matches no condition -- a callable is not even called -- except ``$exists:
false``, ``$ne`` and ``$nin``, which keep MongoDB's meaning.

Searches are also *recorded* by the engine (:func:`encode`) so a run's questions can be asked
again later; a regex is stored as ``$regex``/``$options``, a callable makes the query opaque.

A regex has a deadline. ``re`` cannot be stopped, and one catastrophic pattern froze the
daemon (its searches run on its event loop, and it asks recorded ones again after every
change), so every regex -- ``$regex`` or a compiled ``re.Pattern``, recompiled with the same
flags -- is matched by the ``regex`` package, whose matches take a ``timeout``: at most
:data:`MATCH_TIMEOUT_S` per match and :data:`SEARCH_BUDGET_S` for all the matches of one
compiled search; past either, a :class:`SearchError` names the pattern and the limit
(docs/decisions.md). ``regex`` is imported only when a search holds a regex: ``import thot``
stays cheap.
"""

from __future__ import annotations

import importlib
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

Matcher = Callable[[Any, bool], bool]  # (value, present) -> matched
_MISSING = object()

_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}

#: The longest one regex match may take. Matching a name or a metadata string against an
#: ordinary pattern takes microseconds; a tenth of a second is only reached by a pattern
#: that backtracks catastrophically.
MATCH_TIMEOUT_S = 0.1

#: The longest all the regex matches of one search (one ``find_*`` over a project) may take
#: together: what one search can hold the daemon's loop, below the 1 s within which
#: ``thotctl status`` must answer. 30,000 objects against an ordinary pattern take ~30 ms.
SEARCH_BUDGET_S = 0.5


class SearchError(ValueError, TypeError):
    """A search dict that cannot be evaluated (unknown operator, bad operand).

    A ``TypeError`` too: the original Thot raised that for an unknown operator or a ``$in``
    without a list, and scripts written for it may catch it."""


def lookup(obj: Any, dotted: str) -> Any:
    """The value at a dotted path, or ``_MISSING``; integer parts index into lists."""
    cur = obj
    for part in dotted.split("."):
        if isinstance(cur, Mapping):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list | tuple) and part.lstrip("-").isdigit():
            try:  # "--1", "²" and 5000-digit parts pass isdigit() but are no index
                idx = int(part)
            except ValueError:
                return _MISSING
            if not -len(cur) <= idx < len(cur):
                return _MISSING
            cur = cur[idx]
        else:
            return _MISSING
    return cur


def _same(a: Any, b: Any) -> bool:
    """Python's ``==`` (so ``1 == True``), false for values that refuse to compare."""
    try:
        return bool(a == b)
    except Exception:  # a value with an odd __eq__ (an array...) is simply not equal
        return False


def _equals(query: Any, value: Any) -> bool:
    if isinstance(value, list | tuple) and not isinstance(query, list | tuple):
        return any(_same(query, v) for v in value)
    return _same(query, value)


def _compare(op: str) -> Callable[[Any, Mapping[str, Any], _Budget], Matcher]:
    def build(operand: Any, _spec: Mapping[str, Any], _budget: _Budget) -> Matcher:
        def test(value: Any, present: bool) -> bool:
            if not present or value is None:
                return False
            try:
                if op == "$gt":
                    return bool(value > operand)
                if op == "$gte":
                    return bool(value >= operand)
                if op == "$lt":
                    return bool(value < operand)
                return bool(value <= operand)
            except TypeError:
                return False

        return test

    return build


class _Budget:
    """What is left of a search's :data:`SEARCH_BUDGET_S`, shared by its regexes."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = SEARCH_BUDGET_S


def _with_deadline(pattern: re.Pattern[str], budget: _Budget) -> Matcher:
    """A matcher that searches with ``regex`` under the deadlines of the module's docstring;
    ``pattern`` says what to search and with which flags."""
    # Imported here, on the first regex search (``regex`` ships no type hints: Any).
    regex: Any = importlib.import_module("regex")
    if not isinstance(pattern.pattern, str):
        raise SearchError(f"a bytes pattern cannot search text: {pattern.pattern!r}")
    flags = sum(new for old, new in _regex_flags(regex) if pattern.flags & old)
    try:
        compiled = regex.compile(pattern.pattern, flags)
    except regex.error as exc:
        raise SearchError(f"bad $regex {pattern.pattern!r}: {exc}") from None

    def test(value: Any, present: bool) -> bool:
        if not isinstance(value, str):
            return False
        timeout = min(MATCH_TIMEOUT_S, budget.left)
        if timeout <= 0:
            raise SearchError(_too_slow(pattern.pattern, timeout))
        began = time.monotonic()
        try:
            found = compiled.search(value, timeout=timeout)
        except TimeoutError:
            raise SearchError(_too_slow(pattern.pattern, timeout)) from None
        finally:
            budget.left -= time.monotonic() - began
        return found is not None

    return test


def _too_slow(pattern: str, timeout: float) -> str:
    if timeout < MATCH_TIMEOUT_S:
        return (f"regex {pattern!r} ran out of time: the regexes of one search may take "
                f"{SEARCH_BUDGET_S:g} s in all")
    return (f"regex {pattern!r} took over {MATCH_TIMEOUT_S:g} s on one value (it backtracks "
            "catastrophically?); make it more specific")


def _regex_flags(regex: Any) -> list[tuple[int, int]]:
    """``re`` flags and the ``regex`` flags that mean the same."""
    return [(re.IGNORECASE, regex.IGNORECASE), (re.MULTILINE, regex.MULTILINE),
            (re.DOTALL, regex.DOTALL), (re.VERBOSE, regex.VERBOSE), (re.ASCII, regex.ASCII)]


def _choices(op: str, operand: Any) -> list[Any]:
    if not isinstance(operand, list | tuple | set | frozenset):
        raise SearchError(f"{op} needs a list, got {operand!r}")
    return list(operand)


def _op_eq(operand: Any, _spec: Mapping[str, Any], _budget: _Budget) -> Matcher:
    return lambda v, p: p and _equals(operand, v)


def _op_ne(operand: Any, _spec: Mapping[str, Any], _budget: _Budget) -> Matcher:
    return lambda v, p: not p or not _equals(operand, v)


def _op_in(operand: Any, _spec: Mapping[str, Any], _budget: _Budget) -> Matcher:
    choices = _choices("$in", operand)
    return lambda v, p: p and any(_equals(c, v) for c in choices)


def _op_nin(operand: Any, _spec: Mapping[str, Any], _budget: _Budget) -> Matcher:
    choices = _choices("$nin", operand)
    return lambda v, p: not p or not any(_equals(c, v) for c in choices)


def _op_exists(operand: Any, _spec: Mapping[str, Any], _budget: _Budget) -> Matcher:
    want = bool(operand)
    return lambda v, p: p == want


def _op_regex(operand: Any, spec: Mapping[str, Any], budget: _Budget) -> Matcher:
    flags = 0
    for ch in str(spec.get("$options", "")):
        if ch not in _FLAGS:
            raise SearchError(f"unknown $options flag {ch!r}; known: {''.join(_FLAGS)}")
        flags |= _FLAGS[ch]
    try:
        pattern = operand if isinstance(operand, re.Pattern) else re.compile(operand, flags)
    except (re.error, TypeError, OverflowError, RecursionError) as exc:
        raise SearchError(f"bad $regex {operand!r}: {exc}") from None
    return _with_deadline(pattern, budget)


def _op_options(_operand: Any, spec: Mapping[str, Any], _budget: _Budget) -> None:
    if "$regex" not in spec:
        raise SearchError("$options is only meaningful beside $regex")


_OPERATORS: dict[str, Callable[[Any, Mapping[str, Any], _Budget], Matcher | None]] = {
    "$eq": _op_eq, "$ne": _op_ne, "$in": _op_in, "$nin": _op_nin, "$exists": _op_exists,
    "$regex": _op_regex, "$options": _op_options,
    "$gt": _compare("$gt"), "$gte": _compare("$gte"), "$lt": _compare("$lt"),
    "$lte": _compare("$lte"),
}
OPERATORS = frozenset(_OPERATORS)


def _operators(spec: Mapping[str, Any], budget: _Budget) -> Matcher:
    tests: list[Matcher] = []
    for op, operand in spec.items():
        build = _OPERATORS.get(op)
        if build is None:
            raise SearchError(f"unknown search operator {op!r}; known: {', '.join(sorted(OPERATORS))}")
        test = build(operand, spec, budget)
        if test is not None:
            tests.append(test)
    return lambda v, p: all(t(v, p) for t in tests)


def _contains_all(wanted: list[Any]) -> Matcher:
    def contains(v: Any, p: bool) -> bool:
        if not p or not isinstance(v, list | tuple):
            return False
        return all(any(_same(w, x) for x in v) for w in wanted)

    return contains


def _condition(cond: Any, budget: _Budget) -> Matcher:
    if isinstance(cond, re.Pattern):
        return _with_deadline(cond, budget)
    if callable(cond):
        return lambda v, p: p and bool(cond(v))
    if isinstance(cond, Mapping) and any(isinstance(k, str) and k.startswith("$") for k in cond):
        return _operators(cond, budget)
    if isinstance(cond, list | tuple):
        return _contains_all(list(cond))
    return lambda v, p: p and _equals(cond, v)


def compile_search(search: Mapping[str, Any] | None) -> Callable[[Mapping[str, Any]], bool]:
    """Turn a search dict into a predicate on objects; raises :class:`SearchError` early (and
    while matching, when a regex runs out of time: see the module's docstring)."""
    if not search:
        return lambda obj: True
    if not isinstance(search, Mapping):
        raise SearchError(f"a search must be a dict, got {type(search).__name__}")
    parts: list[tuple[str, Matcher]] = []
    budget = _Budget()
    for key, cond in search.items():
        if not isinstance(key, str):
            raise SearchError(f"search keys must be strings, got {key!r}")
        if key.startswith("$"):
            raise SearchError(f"unknown search operator {key!r} at the top level")
        parts.append((key, _condition(cond, budget)))

    def match(obj: Mapping[str, Any]) -> bool:
        for key, test in parts:
            value = lookup(obj, key)
            present = value is not _MISSING
            if not test(value if present else None, present):
                return False
        return True

    return match


def matches(obj: Mapping[str, Any], search: Mapping[str, Any] | None) -> bool:
    return compile_search(search)(obj)


def encode(search: Any) -> tuple[Any, bool]:
    """A JSON form of a search that :func:`compile_search` evaluates the same way.

    Returns ``(json_value, opaque)``; opaque is true when the search holds a callable, whose
    meaning cannot be stored (the engine then treats the run's whole subtree as its input).
    """
    opaque = False

    def enc(value: Any) -> Any:
        nonlocal opaque
        if isinstance(value, re.Pattern):
            opts = "".join(ch for ch, fl in _FLAGS.items() if value.flags & fl)
            out: dict[str, Any] = {"$regex": value.pattern}
            if opts:
                out["$options"] = opts
            return out
        if isinstance(value, Mapping):
            if "$regex" in value and isinstance(value["$regex"], re.Pattern):
                merged = enc(value["$regex"])
                rest = {k: enc(v) for k, v in value.items() if k != "$regex"}
                return {**rest, **merged}
            return {str(k): enc(v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [enc(v) for v in value]
        if callable(value):
            opaque = True
            return {"$opaque": getattr(value, "__qualname__", repr(value))}
        if value is None or isinstance(value, str | int | float | bool):
            return value
        opaque = True
        return {"$opaque": repr(value)}

    return enc(search or {}), opaque
