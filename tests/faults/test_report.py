"""The reliability report: a session's table is marked when partial, and only a complete
table reaches ``docs/reliability.md`` (here a stand-in file: a test never writes a tracked
file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from . import report
from .report import PARTIAL, Report


def _table(complete: bool) -> str:
    rep = Report()
    row = rep.row("a fault")
    row.tries, row.notes = 3, "handled"
    return rep.markdown(1.0, {}, complete)


def test_a_partial_table_says_so() -> None:
    assert PARTIAL in _table(complete=False)
    assert PARTIAL not in _table(complete=True)
    assert "| a fault | 3 | 0 | – | handled |" in _table(complete=True)


@pytest.mark.parametrize("complete", [True, False])
def test_only_a_complete_table_is_copied_to_the_docs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, complete: bool) -> None:
    docs = tmp_path / "reliability.md"
    docs.write_text("before\n")
    monkeypatch.setattr(report, "DOCS", docs)
    table = tmp_path / "session.md"
    table.write_text(_table(complete))
    assert report.main(["--from", str(table)]) == (0 if complete else 1)
    assert docs.read_text() == (table.read_text() if complete else "before\n")


def test_the_docs_name_the_command_that_refreshes_them() -> None:
    assert report.DOCS_COMMAND in report.DOCS.read_text(encoding="utf-8")
