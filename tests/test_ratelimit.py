"""The sign-up limiter (a sliding window per key) and the relay's pacer, on injected clocks."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fake_time import FakeTime

from digest import ratelimit
from digest.ratelimit import Pacer, Rate, RateLimiter

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


def pace(pacer: Pacer, time: FakeTime, count: int) -> list[float]:
    """Acquire `count` slots from as many concurrent tasks; the instants they were granted."""
    granted: list[float] = []

    async def one() -> None:
        await pacer.acquire()
        granted.append(time.now)

    async def scenario() -> None:
        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(scenario())
    return granted


def test_ten_a_second_sends_35_messages_one_every_tenth_of_a_second() -> None:
    time = FakeTime()
    pacer = Pacer(Rate(10, 1.0), time.clock, time.sleep)

    granted = pace(pacer, time, 35)

    assert granted == pytest.approx([n / 10 for n in range(35)])
    assert time.now == pytest.approx(3.4)
    assert time.sleeps == pytest.approx([0.1] * 34)


def test_no_window_holds_more_than_the_limit_and_no_sleep_is_longer_than_a_slot() -> None:
    time = FakeTime()
    pacer = Pacer(Rate(600, 60.0), time.clock, time.sleep)

    granted = pace(pacer, time, 1500)

    # Any 601 sends in a row span at least the window, so no 60 s holds 601.
    assert min(b - a for a, b in zip(granted, granted[600:], strict=False)) >= 60.0 - 1e-6
    assert max(time.sleeps) <= 0.1 + 1e-9  # straight to the next slot, never a window's worth


def test_concurrent_acquirers_are_served_in_the_order_they_asked() -> None:
    time = FakeTime()
    pacer = Pacer(Rate(5, 1.0), time.clock, time.sleep)
    served: list[int] = []

    async def one(n: int) -> None:
        await pacer.acquire()
        served.append(n)

    async def scenario() -> None:
        await asyncio.gather(*(one(n) for n in range(20)))

    asyncio.run(scenario())

    assert served == list(range(20))
    assert time.now == pytest.approx(19 / 5)


def test_an_idle_spell_earns_no_burst() -> None:
    time = FakeTime()
    pacer = Pacer(Rate(10, 1.0), time.clock, time.sleep)
    pace(pacer, time, 2)
    time.now += 5.0  # nothing sent for five seconds

    granted = pace(pacer, time, 3)

    assert granted == pytest.approx([5.1, 5.2, 5.3])  # the first at once, then spaced again
    assert time.sleeps == pytest.approx([0.1, 0.1, 0.1])


def test_a_cancelled_waiter_uses_no_slot() -> None:
    time = FakeTime()
    cancel_once = [asyncio.CancelledError()]

    async def sleep(seconds: float) -> None:
        if cancel_once:
            raise cancel_once.pop()  # as when the run is cancelled mid-wait
        await time.sleep(seconds)

    pacer = Pacer(Rate(10, 1.0), time.clock, sleep)

    async def scenario() -> None:
        await pacer.acquire()
        with pytest.raises(asyncio.CancelledError):
            await pacer.acquire()
        await pacer.acquire()

    asyncio.run(scenario())

    assert time.sleeps == pytest.approx([0.1])  # the slot the cancelled waiter would have had


def test_no_rate_never_reads_the_clock_or_sleeps() -> None:
    def clock() -> float:
        raise AssertionError("read the clock")

    async def sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s")

    pacer = Pacer(None, clock, sleep)

    async def scenario() -> None:
        await asyncio.gather(*(pacer.acquire() for _ in range(100)))

    asyncio.run(scenario())


@pytest.mark.parametrize(("messages", "seconds"), [(0, 1.0), (10, 0.0), (-1, 60.0)])
def test_a_rate_needs_messages_and_a_window(messages: int, seconds: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate(messages, seconds)
