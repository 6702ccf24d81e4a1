"""Signal handling for the daemon: installed for the time it serves, restored afterwards.

One context manager installs the handlers on the event loop (so a signal wakes the loop
through its self-pipe, with no polling) and puts back whatever was there before, also
when start-up fails half-way. Handlers only record the signal: the daemon's main loop
acts on it (uvicorn's ``capture_signals`` shape).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator

#: Stop: let running scripts finish within the grace period, then exit.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: Re-read the configuration (``systemctl reload``).
RELOAD_SIGNALS = (signal.SIGHUP,)


@contextlib.contextmanager
def captured_signals(loop: asyncio.AbstractEventLoop, handle: Callable[[int], None],
                     signals: Iterable[int] = STOP_SIGNALS + RELOAD_SIGNALS) -> Iterator[None]:
    """Route ``signals`` to ``handle(signum)`` on ``loop`` inside the block."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    try:
        for sig in previous:
            loop.add_signal_handler(sig, handle, sig)
        yield
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
