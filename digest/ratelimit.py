"""A sliding-window limit per key (an address, a client), on an injected clock. In memory, per process."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
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
