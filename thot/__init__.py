"""The Thot script API: ``from thot import ThotProject`` in an analysis script.

Kept light on purpose: every script run pays for this import, so the project classes load
only when a script asks for them; ``thot.filter`` (the original's search over a list, a
function here as there) too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from thot.thot import LocalProject, ThotProject

__all__ = ["LocalProject", "ThotProject"]


def __getattr__(name: str) -> Any:
    if name == "filter":
        from thot.filter import filter as _filter

        globals()["filter"] = _filter  # the function, not the module, as the original had it
        return _filter
    if name in __all__:
        from thot import thot as _thot

        return getattr(_thot, name)
    raise AttributeError(f"module 'thot' has no attribute {name!r}")
