"""Fixtures for the daemon tests; the helpers live in ``daemonkit`` (a unique module name,
so test files elsewhere that import their own ``conftest`` are not confused)."""

from daemonkit import daemon, gs  # noqa: F401 - fixtures re-exported for pytest
