"""The sign-up limiter: a sliding window per key, on an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from digest import ratelimit
from digest.ratelimit import RateLimiter

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def test_the_hit_past_the_limit_is_refused_with_the_wait_until_the_oldest_ages_out() -> None:
    clock = Clock()
    limiter = RateLimiter(3, HOUR, clock)
    for minutes in (0, 10, 20):
        clock.now = START + timedelta(minutes=minutes)
        assert limiter.hit("a@example.org") is None
    clock.now = START + timedelta(minutes=30)
    assert limiter.hit("a@example.org") == timedelta(minutes=30)
    assert limiter.hit("b@example.org") is None  # other keys are counted apart


def test_a_refused_hit_does_not_extend_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(1, HOUR, clock)
    assert limiter.hit("k") is None
    for minutes in (10, 20, 59):
        clock.now = START + timedelta(minutes=minutes)
        assert limiter.hit("k") == HOUR - timedelta(minutes=minutes)
    clock.now = START + HOUR
    assert limiter.hit("k") is None


def test_keys_whose_hits_aged_out_are_forgotten() -> None:
    clock = Clock()
    limiter = RateLimiter(1, HOUR, clock)
    for n in range(ratelimit.PRUNE_ABOVE):
        limiter.hit(f"old{n}")
    clock.now = START + 2 * HOUR
    limiter.hit("new")  # one more than PRUNE_ABOVE: the stale ones go
    assert len(limiter) == 1
    assert limiter.hit("old0") is None
