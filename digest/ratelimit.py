"""Rate limits on injected clocks, in memory, per process.

RateLimiter: a sliding window per key (an address, a client) that refuses what is over the limit.
Pacer: evenly spaced slots that make senders wait for their turn (messages towards the SMTP relay).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

# Keys whose hits have all aged out are dropped once this many are held, so memory stays bounded.
PRUNE_ABOVE = 10_000


class RateLimiter:
    """At most `limit` hits per key within any `window`."""

    def __init__(self, limit: int, window: timedelta, clock: Callable[[], datetime]) -> None:
        self._limit = limit
        self._window = window
        self._clock = clock
        self._hits: dict[str, deque[datetime]] = {}

    def __len__(self) -> int:
        """How many keys are tracked."""
        return len(self._hits)

    def hit(self, key: str) -> timedelta | None:
        """Count one hit; None if allowed, else how long until the key may try again (not counted)."""
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._limit:
            return hits[0] + self._window - now
        hits.append(now)
        if len(self._hits) > PRUNE_ABOVE:
            self._prune(now)
        return None

    def _prune(self, now: datetime) -> None:
        stale = [key for key, hits in self._hits.items() if hits[-1] <= now - self._window]
        for key in stale:
            del self._hits[key]


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `messages` in any `seconds`."""

    messages: int
    seconds: float

    def __post_init__(self) -> None:
        if self.messages < 1 or self.seconds <= 0:
            raise ValueError(f"a rate needs messages >= 1 and seconds > 0, not {self}")

    @property
    def interval(self) -> float:
        return self.seconds / self.messages


class Pacer:
    """Hands out send slots evenly spaced `rate.interval` apart, to any number of asyncio tasks.

    No bursts: the slots are never closer than the interval, so any `rate.seconds` holds at most
    `rate.messages` of them, and an idle spell earns no credit. Waiters queue on a FIFO lock and
    only its holder sleeps, for at most one interval: straight to the next slot, never a whole
    window (listmonk #1496). A slot is taken when the sleep ends, so a cancelled waiter uses none.
    A send starts at its slot, or a little later if the event loop wakes late; later slots stay put.
    """

    def __init__(
        self,
        rate: Rate | None,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._rate = rate
        self._clock = clock
        self._sleep = sleep
        self._next = -math.inf  # the earliest instant the next slot may have
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for the next slot; at once when there is no rate."""
        if self._rate is None:
            return
        async with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            if slot > now:
                await self._sleep(slot - now)
            self._next = slot + self._rate.interval
