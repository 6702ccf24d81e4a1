"""``from thot import filter`` / ``thot.filter.filter``: the original's search over a list of
objects (0.5.4+), with the searches of ``find_*`` (:mod:`thotd.project.search`)."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from thotd.project.search import compile_search

T = TypeVar("T", bound=Mapping[str, Any])


def filter(filter: Mapping[str, Any], resources: Iterable[T]) -> list[T]:  # noqa: A001, A002 - the original's names
    """The resources (containers, assets, dicts) that match the search ``filter``."""
    test = compile_search(filter)
    return [r for r in resources if test(r)]


class _CallableModule(types.ModuleType):
    """Importing ``thot.filter`` makes the package attribute this module (the import system
    sets it): callable, so ``thot.filter(search, objects)`` works whichever came first."""

    def __call__(self, search: Mapping[str, Any], resources: Iterable[T]) -> list[T]:
        return filter(search, resources)


sys.modules[__name__].__class__ = _CallableModule
