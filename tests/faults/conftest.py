"""The fault suite's fixtures and the hook that writes its reliability table.

The table goes to the session's build folder, never into the checkout: ``THOTD_FAULTS_REPORT``
when set, else pytest's base temporary folder; its path is printed at the end of the session.
A session that did not run every fault test (a ``-k`` selection, an ``-x`` stop) marks its
table partial. ``docs/reliability.md`` is refreshed only by the command in ``report.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemonkit import Daemon, make_daemon

from .report import PROFILE, REPORT, REPORT_VAR, Report, pick

HERE = Path(__file__).resolve().parent
_outcomes: dict[str, str] = {}
_finished: set[str] = set()
_deselected: list[str] = []
_written: list[str] = []  # where the session's table went, for the summary
_build: list[Path] = []  # the session's base temporary folder, once a test asked for the report
_t0 = time.monotonic()


def _ours(nodeid_or_path: str | os.PathLike[str]) -> bool:
    text = os.fspath(nodeid_or_path)
    return "tests/faults/" in text.replace(os.sep, "/")


@pytest.fixture(scope="session")
def reliability(tmp_path_factory: pytest.TempPathFactory) -> Report:
    """The session's collector: ``row = reliability.row("fault")`` then fill it in."""
    if not _build:
        _build.append(tmp_path_factory.getbasetemp())
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
    override = os.environ.get(REPORT_VAR)
    target = Path(override) if override else _build[0] / "reliability.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(REPORT.markdown(time.monotonic() - _t0, _outcomes, complete))
    kind = "" if complete else "partial "
    _written.append(f"fault suite ({PROFILE} profile): {kind}table in {target}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for line in _written:
        terminalreporter.write_sep("-", "reliability report")
        terminalreporter.write_line(line)
