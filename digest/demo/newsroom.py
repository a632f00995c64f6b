"""The demo's news desk: a sample article every minute, and a calendar that moves a day with each.

A digest goes out at most once a day, week or month, so a demo on the real calendar would send
each reader one digest and then nothing for a day. Instead each published article moves the
demo's clock a day on: the daily readers get a digest a minute, holding just that article, and a
weekly reader's Monday digest holds the week's seven. The daemon runs on this clock, so its
plans, its mail's dates and its pages all agree on the demo's date. (A day that turns while a
run is sending makes its lease look lost: it begins no more mail, and the next run sends the rest.)
When the pool of sample articles is used up the desk stops, and so does the calendar.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from digest.domain import ArticleDraft, Clock
from digest.store import Store

log = logging.getLogger("digest.demo")

DAY = timedelta(days=1)


class Newsroom:
    def __init__(self, store: Store, pool: Sequence[ArticleDraft], clock: Clock) -> None:
        self._store = store
        self._pool = deque(pool)
        self._clock = clock
        self.days = 0  # how far the demo's calendar is ahead of clock

    @property
    def left(self) -> int:
        """Sample articles not yet published."""
        return len(self._pool)

    def now(self) -> datetime:
        """The demo's clock."""
        return self._clock() + self.days * DAY

    async def publish(self) -> None:
        """Publish the next sample article, dated now, then turn the calendar to the next day."""
        if not self._pool:
            return
        now = self.now()
        article = replace(self._pool.popleft(), published_at=now)
        # Published before the day turns: a run between the two finds nobody due yet, so the
        # article waits for the next day's digests instead of one reader getting none.
        await asyncio.to_thread(self._store.upsert_articles, [article], now)
        self.days += 1
        log.info(
            "published %r; the demo's calendar turns to %s (%d sample articles left)",
            article.title,
            f"{self.now():%A} {self.now().day} {self.now():%B}",
            self.left,
        )
