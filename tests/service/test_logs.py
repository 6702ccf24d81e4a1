"""thotd.service.logs: output format per destination, levels, stdlib routing, reconfiguration."""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.contextvars import bound_contextvars

from thotd.service.logs import configure_logging


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Leave the process-wide logging state as we found it."""
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    aps_level = logging.getLogger("apscheduler").level
    try:
        yield
    finally:
        for handler in root.handlers[:]:
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        root.setLevel(level)
        logging.getLogger("apscheduler").setLevel(aps_level)
        logging.captureWarnings(False)
        structlog.reset_defaults()


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_when_not_a_tty() -> None:
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    structlog.get_logger("thotd.t1").info("indexed", objects=3)
    logging.getLogger("watchdog.observers").warning("queue overflow %d", 7)
    first, second = json_lines(out.getvalue())
    assert first["event"] == "indexed"
    assert first["objects"] == 3
    assert first["level"] == "info"
    assert first["logger"] == "thotd.t1"
    assert first["timestamp"].endswith("Z")
    assert list(first)[:4] == ["timestamp", "level", "logger", "event"]
    assert second == {
        "timestamp": second["timestamp"],
        "level": "warning",
        "logger": "watchdog.observers",
        "event": "queue overflow 7",
    }


def test_levels_filter_structlog_and_stdlib() -> None:
    out = io.StringIO()
    configure_logging("warning", None, stream=out)
    log = structlog.get_logger("thotd.t2")
    log.debug("no")
    log.info("no")
    logging.getLogger("watchdog").info("no")
    log.warning("yes")
    log.error("yes too")
    assert [e["event"] for e in json_lines(out.getvalue())] == ["yes", "yes too"]


def test_apscheduler_info_is_turned_down() -> None:
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    aps = logging.getLogger("apscheduler.executors.default")
    aps.info('Running job "reconcile"')
    aps.warning("Run time of job was missed")
    assert [e["event"] for e in json_lines(out.getvalue())] == ["Run time of job was missed"]
    out.truncate(0)
    out.seek(0)
    configure_logging("debug", None, stream=out)  # when debugging, show everything
    aps.info('Running job "reconcile"')
    assert [e["event"] for e in json_lines(out.getvalue())] == ['Running job "reconcile"']


def test_file_gets_json_even_when_console_is_a_tty(tmp_path: Path) -> None:
    out = FakeTTY()
    log_file = tmp_path / "logs" / "thotd.log"
    configure_logging("info", log_file, stream=out)
    structlog.get_logger("thotd.t3").info("run finished", script="plot.py")
    for handler in logging.getLogger().handlers:
        handler.flush()
    (record,) = json_lines(log_file.read_text())
    assert record["event"] == "run finished"
    assert record["script"] == "plot.py"
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    console = out.getvalue()
    assert "run finished" in console
    assert not console.lstrip().startswith("{")  # the console renderer, not JSON


def test_console_colours_and_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    out = FakeTTY()
    configure_logging("info", None, stream=out)
    structlog.get_logger("thotd.t4").info("coloured")
    assert "\x1b[" in out.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    out = FakeTTY()
    configure_logging("info", None, stream=out)
    structlog.get_logger("thotd.t4").info("plain")
    assert "plain" in out.getvalue()
    assert "\x1b[" not in out.getvalue()


def test_journal_format_when_stream_is_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open(tmp_path / "journal", "w+", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        configure_logging("info", None, stream=stream)
        structlog.get_logger("thotd.t5").error("script failed", code=2)
        logging.getLogger("watchdog").info("started")
        stream.flush()
        lines = (tmp_path / "journal").read_text().splitlines()
    assert lines[0].startswith("<3>level=error event=")
    assert "script failed" in lines[0]
    assert "code=2" in lines[0]
    assert "timestamp" not in lines[0]  # journald has its own
    assert lines[1].startswith("<6>level=info event=started")


def test_inherited_journal_stream_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """JOURNAL_STREAM from a parent (a terminal in a systemd session) must not count."""
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    structlog.get_logger("thotd.t6").info("hello")
    assert json_lines(out.getvalue())[0]["event"] == "hello"


def test_context_binding_reaches_both_kinds_of_records() -> None:
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    log = structlog.get_logger("thotd.t7")
    with bound_contextvars(project="perovskites", run_id=42):
        log.info("inside")
        logging.getLogger("watchdog").warning("stdlib inside")
    log.info("outside")
    inside, stdlib_inside, outside = json_lines(out.getvalue())
    assert inside["project"] == "perovskites"
    assert inside["run_id"] == 42
    assert stdlib_inside["project"] == "perovskites"
    assert "project" not in outside


def test_exceptions_are_rendered() -> None:
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    try:
        raise ZeroDivisionError("bad sample")
    except ZeroDivisionError:
        structlog.get_logger("thotd.t8").exception("handler failed")
    (record,) = json_lines(out.getvalue())
    assert record["level"] == "error"
    assert "Traceback" in record["exception"]
    assert "ZeroDivisionError: bad sample" in record["exception"]


def test_reconfigure_is_idempotent_and_reaches_cached_loggers(tmp_path: Path) -> None:
    first = io.StringIO()
    configure_logging("info", tmp_path / "a.log", stream=first)
    log = structlog.get_logger("thotd.t9")
    log.info("one")  # cached from here on
    log.debug("hidden")
    second = io.StringIO()
    configure_logging("debug", tmp_path / "a.log", stream=second)
    configure_logging("debug", tmp_path / "a.log", stream=second)  # twice: no duplicates
    log.debug("two")
    ours = [h for h in logging.getLogger().handlers if getattr(h, "_thotd_handler", False)]
    assert len(ours) == 2  # one stream, one file
    assert [e["event"] for e in json_lines(first.getvalue())] == ["one"]
    assert [e["event"] for e in json_lines(second.getvalue())] == ["two"]
    for handler in ours:
        handler.flush()
    assert [e["event"] for e in json_lines((tmp_path / "a.log").read_text())] == ["one", "two"]


def test_other_handlers_are_left_alone() -> None:
    foreign = logging.NullHandler()
    root = logging.getLogger()
    root.addHandler(foreign)
    try:
        configure_logging("info", None, stream=io.StringIO())
        configure_logging("info", None, stream=io.StringIO())
        assert foreign in root.handlers
    finally:
        root.removeHandler(foreign)


def test_warnings_are_logged() -> None:
    out = io.StringIO()
    configure_logging("info", None, stream=out)
    warnings.warn_explicit("careful", UserWarning, "x.py", 1)
    assert "careful" in json_lines(out.getvalue())[0]["event"]


def test_unknown_level() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose", None, stream=io.StringIO())
