"""When to refresh, and a scheduler that sleeps until then.

The scheduler keeps a heap of deadlines and sleeps until the earliest one,
like ssh-agent's reaper; it never walks every connection. Deadlines are
wall-clock times (token expiry is wall-clock), and a sleep is capped at
`max_sleep` so that a laptop waking from suspend, or a clock that jumped,
is noticed within that cap: asyncio's monotonic clock stands still while
the machine sleeps.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import random
import time
from collections.abc import Callable

__all__ = ["refresh_margin", "refresh_deadline", "refresh_due_at", "is_fresh", "backoff_delay", "Scheduler"]

log = logging.getLogger(__name__)

MIN_MARGIN = 60.0
BACKOFF_BASE = 5.0
BACKOFF_CAP = 300.0
#: A token at most this old (or a tenth of its lifetime, if more) is as fresh as the server makes them.
FRESH_SLACK = 5.0


def refresh_margin(lifetime: float, min_margin: float = MIN_MARGIN) -> float:
    """Seconds before expiry to refresh: min(max(60 s, L/4), L/2).
    The 60 s floor is the user's "refresh margin" setting."""
    return min(max(min_margin, lifetime / 4), lifetime / 2)


def refresh_deadline(
    obtained_at: float, expires_at: float, rng: random.Random | None = None, *, min_margin: float = MIN_MARGIN
) -> float:
    """When to refresh a token, with up to 10% of the margin as jitter (earlier,
    never later), so that connections made together do not refresh together."""
    lifetime = expires_at - obtained_at
    if lifetime <= 0:
        return obtained_at
    margin = refresh_margin(lifetime, min_margin)
    jitter = (rng or random).uniform(0, 0.1 * margin)
    return expires_at - margin - jitter


def refresh_due_at(obtained_at: float, expires_at: float, *, min_margin: float = MIN_MARGIN) -> float:
    """When a refresh becomes due, without jitter: requests refresh from here on."""
    return expires_at - refresh_margin(max(1.0, expires_at - obtained_at), min_margin)


def is_fresh(obtained_at: float, expires_at: float, now: float) -> bool:
    """Whether a token is as fresh as its server makes them. A `min_ttl` above
    the server's token lifetime cannot be met by refreshing; refreshing such a
    token again would only cost a grant per request, so it is served as is."""
    return now - obtained_at <= max(FRESH_SLACK, (expires_at - obtained_at) / 10)


def backoff_delay(failures: int, rng: random.Random | None = None) -> float:
    """Exponential backoff after `failures` consecutive failures, capped, with jitter."""
    delay = min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** max(0, failures - 1))
    uniform = rng.uniform if rng is not None else random.uniform
    return delay * uniform(0.75, 1.0)


class Scheduler:
    """Calls `fire(name)` once when `name`'s deadline passes."""

    def __init__(
        self, fire: Callable[[str], None], *, clock: Callable[[], float] = time.time, max_sleep: float = 60.0
    ) -> None:
        self._fire = fire
        self._clock = clock
        self._max_sleep = max_sleep
        self._heap: list[tuple[float, int, str]] = []
        self._current: dict[str, tuple[float, int]] = {}
        self._seq = 0
        self._wake = asyncio.Event()
        #: How many times the loop woke up; tests read it to see it does not spin.
        self.wakeups = 0

    def set(self, name: str, when: float | None) -> None:
        """Schedule (or reschedule, or with None cancel) `name`."""
        if when is None:
            self._current.pop(name, None)
        else:
            self._seq += 1
            self._current[name] = (when, self._seq)
            heapq.heappush(self._heap, (when, self._seq, name))
        self._wake.set()

    def deadline(self, name: str) -> float | None:
        entry = self._current.get(name)
        return entry[0] if entry else None

    def _next(self) -> tuple[float, str] | None:
        while self._heap:
            when, seq, name = self._heap[0]
            if self._current.get(name) == (when, seq):
                return when, name
            heapq.heappop(self._heap)  # superseded or cancelled
        return None

    async def run(self) -> None:
        while True:
            self._wake.clear()
            self.wakeups += 1
            now = self._clock()
            while (head := self._next()) is not None and head[0] <= now:
                heapq.heappop(self._heap)
                del self._current[head[1]]
                try:
                    self._fire(head[1])
                except Exception:
                    log.exception("scheduled refresh of %s failed to start", head[1])
            head = self._next()
            delay = self._max_sleep if head is None else max(0.0, min(head[0] - now, self._max_sleep))
            # Not `wait_for`: on Python 3.11 it swallows a cancel that arrives
            # just as the event is set, and `stop()` would wait forever.
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
