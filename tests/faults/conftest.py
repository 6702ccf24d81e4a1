"""The fault suite's fixtures and the hook that writes ``docs/reliability.md``.

The table is written only when every fault test of the session ran (a ``-k`` selection or
an ``-x`` stop would leave rows out); ``THOTD_FAULTS_REPORT=PATH`` writes a partial run's
table elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._faults import PROFILE, REPO, REPORT, Daemon, Report, make_daemon, pick

HERE = Path(__file__).resolve().parent
_outcomes: dict[str, str] = {}
_finished: set[str] = set()
_deselected: list[str] = []
_t0 = time.monotonic()


def _ours(nodeid_or_path: str | os.PathLike[str]) -> bool:
    text = os.fspath(nodeid_or_path)
    return "tests/faults/" in text.replace(os.sep, "/")


@pytest.fixture(scope="session")
def reliability() -> Report:
    """The session's collector: ``row = reliability.row("fault")`` then fill it in."""
    return REPORT


@pytest.fixture
def fd(tmp_path: Path) -> Iterator[Daemon]:
    """A configured, not yet started daemon (``fd.start()``)."""
    with make_daemon(tmp_path) as d:
        yield d


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A safety net only: each test bounds its own waits. The long profile needs longer.
    for item in items:
        if _ours(item.nodeid) and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(pick(600, 3600)))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _ours(item.nodeid):
        REPORT.current = item.nodeid


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _ours(report.nodeid):
        return
    if report.failed:
        _outcomes[report.nodeid] = "failed" if report.when == "call" else "error"
    elif report.when == "call" and report.nodeid not in _outcomes:
        _outcomes[report.nodeid] = "skipped" if report.skipped else "passed"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    if report.when == "teardown":
        _finished.add(report.nodeid)


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(i.nodeid for i in items if _ours(i.nodeid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    ours = [i.nodeid for i in getattr(session, "items", []) if _ours(i.nodeid)]
    if not ours or not REPORT.rows:
        return
    files = {p.name for p in HERE.glob("test_*.py")}
    ran = {n.split("::")[0].rsplit("/", 1)[-1] for n in ours}
    complete = files <= ran and not _deselected and all(n in _finished for n in ours)
    override = os.environ.get("THOTD_FAULTS_REPORT")
    target = Path(override) if override else (REPO / "docs" / "reliability.md" if complete else None)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if target is None:
        if reporter is not None:
            reporter.write_line(
                "fault suite: partial run, docs/reliability.md left as it was "
                "(set THOTD_FAULTS_REPORT=PATH to write this run's table)")
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(REPORT.markdown(time.monotonic() - _t0, _outcomes))
    if reporter is not None:
        reporter.write_line(f"fault suite ({PROFILE} profile): wrote {target}")
