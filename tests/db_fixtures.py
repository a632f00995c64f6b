"""Database fixtures: every store test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path

import pytest
from pg_cluster import PgCluster
from sqlalchemy import Engine, MetaData, create_engine, select

from digest import database
from digest.domain import ArticleDraft, DeliveryStatus, Frequency, SubscriberDraft
from digest.ledger import Ledger
from digest.models import DeliveryRow, SubscriberRow
from digest.store import Store, is_address


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'digest.db'}"
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.create_database(f"t_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    engine = database.connect(database_url)
    database.upgrade(engine)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def ledger(store: Store) -> Ledger:
    return Ledger(store)


def deliveries_of(engine: Engine, email: str) -> list[tuple[str, DeliveryStatus, int, str | None]]:
    """(period, status, attempts, last error) of one reader's deliveries, oldest first."""
    D, S = DeliveryRow, SubscriberRow
    query = (
        select(D.period_key, D.status, D.attempts, D.last_error)
        .join(S, S.id == D.subscriber_id)
        .where(is_address(email))
        .order_by(D.id)
    )
    with engine.connect() as conn:
        return [(p, DeliveryStatus(s), a, e) for p, s, a, e in conn.execute(query)]


def seed(
    database_url: str,
    readers: Mapping[str, Frequency],
    articles: Iterable[int],
    *,
    confirmed_at: datetime,
    imported_at: datetime,
) -> None:
    """What `digest db upgrade`, `digest subscribers import --confirmed --now confirmed_at` of
    readers (in UTC) and `digest articles import --now imported_at` of the numbered articles
    leave, done in this process: for tests of something else (a daemon, senders at once), which
    need not start Python once a step to get there. One function, so that a change to the
    store's API is one change here.
    """
    engine = database.connect(database_url)
    try:
        database.upgrade(engine)
        store = Store(engine)
        drafts = [SubscriberDraft(email, frequency, "UTC") for email, frequency in readers.items()]
        store.add_subscribers(drafts, confirmed=True, now=confirmed_at)
        news = [
            ArticleDraft(
                url=f"https://miasfeed.example/articles/{n}",
                title=f"Study {n}: sleep and the heart",
                summary=f"Finding number {n}.",
                category="Medical News & Research",
                reading_minutes=2,
                published_at=imported_at,
            )
            for n in articles
        ]
        store.upsert_articles(news, imported_at)
    finally:
        engine.dispose()


def snapshot(database: str | Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every row of every table, to show that something changed nothing."""
    engine = create_engine(database) if isinstance(database, str) else database
    metadata = MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        tables = {
            name: sorted(map(tuple, conn.execute(select(table))))
            for name, table in metadata.tables.items()
        }
    if isinstance(database, str):
        engine.dispose()
    return tables
