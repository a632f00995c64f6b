"""The daemon's clockwork: APScheduler runs the dispatch pipeline on an interval, one run at a time.

The schedule comes from settings (memory job store) and every piece of state lives in our own
tables, so a restart loses nothing: the first run after start-up sends whatever came due meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from digest.app import Services
from digest.domain import Clock, RunSummary
from digest.errors import DigestError

log = logging.getLogger("digest.daemon")


@dataclass(frozen=True, slots=True)
class LastRun:
    finished_at: datetime
    summary: RunSummary | None  # None when the run failed
    error: str


class Sending(Protocol):
    """Where a dispatch run's sends happen: in the daemon's process, or in one of their own."""

    async def run(self, now: datetime, clock: Clock) -> RunSummary:
        """Send what is due at now; a DigestError says why a run failed."""

    def stop(self) -> None:
        """The run in flight finishes its batch and claims no more; no run follows."""

    async def close(self, finished: bool) -> None:
        """After the last run: finished says whether it ended before the daemon's patience did."""


class InProcess:
    """Sends in the daemon's own process and on its clock: what tests with a fake clock drive."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._stopping = False

    async def run(self, now: datetime, clock: Clock) -> RunSummary:
        sent = await self._services.send(now, clock, should_stop=lambda: self._stopping)
        return sent.summary

    def stop(self) -> None:
        self._stopping = True

    async def close(self, finished: bool) -> None:
        pass


class Dispatcher:
    """One dispatch run at a time; stop() lets the batch in flight finish and record."""

    def __init__(self, sending: Sending, clock: Clock) -> None:
        self._sending = sending
        self._clock = clock
        self._stopping = False
        self._current: asyncio.Task[object] | None = None
        self.last: LastRun | None = None

    @property
    def running(self) -> bool:
        return self._current is not None and not self._current.done()

    async def run(self) -> None:
        if self._stopping or self.running:
            return
        self._current = asyncio.current_task()
        try:
            summary = await self._sending.run(self._clock(), self._clock)
        except DigestError as exc:
            log.error("run failed: %s", exc)
            self.last = LastRun(self._clock(), None, str(exc))
        else:
            log.log(logging.DEBUG if summary.idle else logging.INFO, "run: %s", summary.line())
            self.last = LastRun(self._clock(), summary, "")

    async def stop(self, timeout: float) -> bool:
        """Claim nothing more and wait for the run in flight; False if it outlived timeout."""
        self._stopping = True
        self._sending.stop()
        finished = True
        if self.running and self._current is not None:
            done, _ = await asyncio.wait({self._current}, timeout=timeout)
            finished = bool(done)
        await self._sending.close(finished)
        return finished


@dataclass(frozen=True, slots=True)
class Every:
    """A job run every so many seconds, and (at_start) once at start-up."""

    name: str
    run: Callable[[], Awaitable[None]]
    seconds: float
    at_start: bool = True


def build_scheduler(jobs: Sequence[Every], first_run: datetime) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    for job in jobs:
        # At start (to catch up what came due while we were down), or one interval in.
        later = timedelta(seconds=0 if job.at_start else job.seconds)
        scheduler.add_job(
            job.run,
            "interval",
            seconds=job.seconds,
            id=job.name,
            next_run_time=first_run + later,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,  # however late a busy loop runs it, never drop a run silently
        )
    return scheduler
