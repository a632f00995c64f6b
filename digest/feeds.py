"""Articles from feeds: the one import path behind `digest articles import` and the daemon's poll job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from digest import ingest
from digest.domain import Clock, RowError, Validators
from digest.errors import DigestError
from digest.sources import Fetched, fetch
from digest.store import FeedState, Store
from digest.text import display_name

log = logging.getLogger("digest.feeds")

# A feed may fail now and then (a deploy on the site, a timeout); one failing this long needs a person.
FAILING_TOO_LONG = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Imported:
    added: int
    updated: int
    errors: list[RowError]  # entries skipped, each with its reason
    validators: Validators  # of the answer imported, for the next poll to send back


def import_articles(
    store: Store, source: str, now: datetime, rules: ingest.ImportRules = ingest.NO_RULES
) -> Imported:
    """Read, parse and upsert one feed. A feed that cannot be read or parsed raises InvalidInput.

    It reads the whole feed: an import by hand sends no validators, so it never gets a 304.
    """
    return _import(store, source, fetch(source), now, rules)


def _import(
    store: Store, source: str, fetched: Fetched, now: datetime, rules: ingest.ImportRules
) -> Imported:
    parsed = ingest.parse_articles(
        fetched.data, source=display_name(source), now=now, base=fetched.base, rules=rules
    )
    result = store.upsert_articles(parsed.items, now)
    return Imported(result.added, result.updated, parsed.errors, fetched.validators)


def failing_too_long(state: FeedState, now: datetime) -> bool:
    return state.failing_since is not None and now - state.failing_since >= FAILING_TOO_LONG


class FeedPoller:
    """Polls every configured feed; one that fails is logged and recorded, and the others go on."""

    def __init__(
        self,
        store: Store,
        sources: Sequence[str],
        clock: Clock,
        rules: ingest.ImportRules = ingest.NO_RULES,
    ) -> None:
        self._store = store
        self._sources = tuple(sources)
        self._clock = clock
        self._rules = rules

    async def poll(self) -> None:
        # Each feed in a thread: reading a slow feed and writing articles must not stall the loop.
        await asyncio.gather(*(asyncio.to_thread(self._poll, source) for source in self._sources))

    def _poll(self, source: str) -> None:
        name, now = display_name(source), self._clock()
        try:
            imported = self._import_if_changed(source, now)
        except DigestError as exc:
            log.warning("feed %s failed, trying again next poll: %s", name, exc)
            self._record(source, now, str(exc))
            return
        if imported is None:
            log.debug("feed %s: unchanged since the last poll (HTTP 304)", name)  # idle: not INFO
            self._record(source, now, None)
            return
        self._record(source, now, None, imported.validators)
        for error in imported.errors:
            log.warning("feed %s: skipped %s: %s", name, error.where, error.reason)
        # Every poll "updates" each entry it reads again: only news or a bad entry is worth INFO.
        log.log(
            logging.INFO if imported.added or imported.errors else logging.DEBUG,
            "feed %s: added %d, updated %d, skipped %d",
            name,
            imported.added,
            imported.updated,
            len(imported.errors),
        )

    def _import_if_changed(self, source: str, now: datetime) -> Imported | None:
        """None when the server answers 304: unchanged since the answer imported last."""
        state = self._store.feed_states([source]).get(source)
        fetched = fetch(source, since=state.validators if state else Validators())
        return None if fetched is None else _import(self._store, source, fetched, now, self._rules)

    def _record(
        self, source: str, now: datetime, error: str | None, validators: Validators | None = None
    ) -> None:
        try:
            self._store.record_feed_poll(source, now, error, validators)
        except DigestError as exc:  # the database itself is down; the next poll tries again
            log.error("feed %s: cannot record the poll: %s", display_name(source), exc)
