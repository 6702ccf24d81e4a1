"""Logging set-up for the daemon: structlog in front, the stdlib ``logging`` tree behind.

Every record, from structlog or from a stdlib logger (APScheduler, watchdog, asyncio),
goes through handlers on the root logger whose ``ProcessorFormatter`` picks the output
format per destination:

* the stream: a coloured console on a TTY (``NO_COLOR`` honoured), plain ``key=value``
  with a syslog priority prefix when it is the systemd journal (journald adds its own
  timestamps and parses ``<N>`` into the entry's priority), JSON lines otherwise;
* the log file, when given: always JSON lines, size-rotated.

Why the stdlib tree and not a filtering bound logger: with ``cache_logger_on_first_use``
each module's logger freezes its wrapper class (and a filtering wrapper bakes the level into
it) and its processor list on first use. Here the structlog side never changes (the same
list object, a level-agnostic wrapper); the level lives on the stdlib root logger and is
checked by ``filter_by_level``, and rendering lives in the handlers. So a reload that calls
``configure_logging`` again really changes the level and the outputs of loggers already
in use.

Bind per-project or per-run context with ``structlog.contextvars.bound_contextvars`` (the
context-manager form, so a worker thread's context is reset when the job ends).
"""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
import sys
from pathlib import Path
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from thotd import paths

LEVELS = ("debug", "info", "warning", "error", "critical")
#: Log file rotation: the daemon writes at most this much before starting a new file.
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 3

_SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
_HANDLER_MARK = "_thotd_handler"


def _resolve_exc_info(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Capture ``exc_info=True`` as the actual exception while we are still in the handler.

    Each output formats the traceback its own way later; ``True`` would only mean
    "the current exception", which is a hazard once the record leaves the ``except`` block.
    """
    if event_dict.get("exc_info") is True:
        info = sys.exc_info()
        event_dict["exc_info"] = info if info[0] is not None else False
    return event_dict


def _drop_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("timestamp", None)
    return event_dict


def _leading_keys(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Put timestamp, level, logger and event first: JSON lines are read by people too."""
    head = {
        k: event_dict.pop(k) for k in ("timestamp", "level", "logger", "event") if k in event_dict
    }
    return {**head, **event_dict}


def _journal_prefix(renderer: Processor) -> Processor:
    """Prefix each line with ``<N>`` so journald records the right priority."""

    def render(logger: WrappedLogger, name: str, event_dict: EventDict) -> str:
        level = str(event_dict.get("level", "info"))
        text = str(renderer(logger, name, event_dict))
        return f"<{_SYSLOG_PRIORITY.get(level, 6)}>{text}"

    return render


#: The structlog-side chain. One list object for the life of the process: loggers cached on
#: first use keep a reference to it (see the module docstring).
_STRUCTLOG_PROCESSORS: list[Processor] = [
    structlog.stdlib.filter_by_level,
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.stdlib.PositionalArgumentsFormatter(),
    structlog.processors.StackInfoRenderer(),
    _resolve_exc_info,
    structlog.processors.UnicodeDecoder(),
    structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
]

#: What stdlib records get before the handler's own processors. No ``ExtraAdder``: it would
#: also pick up attributes other handlers' formatters set on the shared record
#: (``message``, ``asctime``), and our own code logs through structlog anyway.
_FOREIGN_PRE_CHAIN: list[Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
]


def _is_journal(stream: TextIO) -> bool:
    """True when ``stream`` is the journal stream systemd set up for us.

    ``JOURNAL_STREAM`` is inherited by every descendant (a terminal started by a systemd
    user session has it, so does everything run inside it), so the variable alone is not
    enough: its ``device:inode`` must match the stream's file, as systemd documents.
    """
    value = os.environ.get("JOURNAL_STREAM")
    if not value:
        return False
    try:
        dev, ino = (int(part) for part in value.split(":", 1))
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _json_processors() -> list[Processor]:
    return [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _leading_keys,
        structlog.processors.JSONRenderer(),
    ]


def _stream_processors(stream: TextIO) -> list[Processor]:
    """Pick the stream format: journal > TTY console > JSON lines."""
    meta = structlog.stdlib.ProcessorFormatter.remove_processors_meta
    if _is_journal(stream):
        return [
            meta,
            _drop_timestamp,
            structlog.processors.format_exc_info,
            _journal_prefix(
                structlog.processors.LogfmtRenderer(key_order=["level", "event"], drop_missing=True)
            ),
        ]
    if _is_tty(stream):
        colors = not os.environ.get("NO_COLOR")
        return [
            meta,
            structlog.processors.TimeStamper(fmt="%Y-%m-%d %H:%M:%S", utc=False),
            structlog.dev.ConsoleRenderer(colors=colors),
        ]
    return _json_processors()


def _handler(handler: logging.Handler, processors: list[Processor]) -> logging.Handler:
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=processors, foreign_pre_chain=_FOREIGN_PRE_CHAIN
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    return handler


class _PrivateRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating handler whose every file, the ones opened after a rollover too, is 0600."""

    def _open(self) -> io.TextIOWrapper:
        stream = open(  # noqa: SIM115 - the handler keeps it open and closes it
            self.baseFilename, self.mode, encoding=self.encoding, errors=self.errors,
            opener=paths.private_file_opener,
        )
        assert isinstance(stream, io.TextIOWrapper)  # a text mode ("a")
        return stream


def _open_log_file(log_file: Path) -> logging.Handler:
    """A rotating handler on a private (0600) file: run logs can reveal what users analyse."""
    paths.make_dirs(log_file.parent)
    return _PrivateRotatingFileHandler(
        log_file,
        maxBytes=LOG_FILE_MAX_BYTES,
        backupCount=LOG_FILE_BACKUPS,
        encoding="utf-8",
    )


def configure_logging(
    level: str = "info",
    log_file: Path | None = None,
    *,
    stream: TextIO | None = None,
) -> None:
    """(Re)configure all logging. Safe to call again, e.g. on reload.

    ``stream`` defaults to ``sys.stderr`` as it is at call time (not at import time, so
    test capture and redirections made before the call are honoured). The previous
    thotd handlers are removed and closed; handlers others put on the root logger (a test
    harness, for one) are left alone.
    """
    name = level.lower()
    if name not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    numeric = logging.getLevelName(name.upper())
    out = stream if stream is not None else sys.stderr

    new_handlers = [_handler(logging.StreamHandler(out), _stream_processors(out))]
    if log_file is not None:
        new_handlers.append(_handler(_open_log_file(log_file), _json_processors()))

    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    for handler in new_handlers:
        root.addHandler(handler)
    root.setLevel(numeric)

    # APScheduler logs every job execution at INFO; keep that for debugging only.
    logging.getLogger("apscheduler").setLevel(
        logging.NOTSET if name == "debug" else logging.WARNING
    )
    logging.captureWarnings(True)

    structlog.configure(
        processors=_STRUCTLOG_PROCESSORS,
        wrapper_class=structlog.stdlib.BoundLogger,
        context_class=dict,
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
