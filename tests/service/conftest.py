"""Fixtures for the service tests; the in-process daemon lives in ``inprocess``."""

from inprocess import in_daemon, run_dir  # noqa: F401 - fixtures re-exported for pytest
