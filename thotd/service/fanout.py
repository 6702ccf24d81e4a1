"""The daemon's events, fanned out to ``subscribe`` streams with bounded memory.

Why bounded: a subscriber that stops reading must cost the daemon a fixed amount, however
many events pour out and however many subscribers there are. So there are at most
``max_subscribers`` streams at once, and each holds at most ``backlog`` events: when a
subscriber falls further behind, its oldest events are dropped and it is told how many it
missed (a ``lagged`` event) before the next one it gets. Events are shared dicts, so a
backlog holds references, not copies.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

#: Streams served at once; one more is refused (the client may retry).
MAX_SUBSCRIBERS = 64
#: Events one subscriber may be behind before its oldest are dropped.
BACKLOG = 256


class TooManySubscribers(Exception):
    """The subscriber limit is reached."""


class Subscription:
    """One subscriber's backlog: ``await next()`` gives events in order, or a ``lagged``
    notice in place of those dropped while it was behind."""

    def __init__(self, backlog: int) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=backlog)
        self._ready = asyncio.Event()
        self.dropped = 0  # events lost since the last lagged notice

    def put(self, event: dict[str, Any]) -> None:
        if len(self._events) == self._events.maxlen:
            self.dropped += 1  # the deque drops the oldest as we append
        self._events.append(event)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._events)

    async def next(self) -> dict[str, Any]:
        """The next event, waiting for one; a ``lagged`` notice first if events were lost."""
        while not self._events:
            self._ready.clear()
            await self._ready.wait()
        if self.dropped:
            missed, self.dropped = self.dropped, 0
            return {"event": "lagged", "missed": missed}
        return self._events.popleft()


class Fanout:
    """The set of live subscriptions; ``publish`` puts an event in each, never blocking."""

    def __init__(self, max_subscribers: int = MAX_SUBSCRIBERS, backlog: int = BACKLOG) -> None:
        self.max_subscribers = max_subscribers
        self.backlog = backlog
        self._subscriptions: set[Subscription] = set()

    def subscribe(self) -> Subscription:
        """A new subscription; ``TooManySubscribers`` at the limit."""
        if len(self._subscriptions) >= self.max_subscribers:
            raise TooManySubscribers(f"too many subscribers (limit {self.max_subscribers})")
        sub = Subscription(self.backlog)
        self._subscriptions.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)

    def publish(self, event: dict[str, Any]) -> None:
        for sub in self._subscriptions:
            sub.put(event)

    def __len__(self) -> int:
        return len(self._subscriptions)
