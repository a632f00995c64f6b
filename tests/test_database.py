"""Schema and engine: migrations match the models, upgrades are idempotent, SQLite runs in WAL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from cli_fixtures import Cli
from db_fixtures import deliveries_of, seed
from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    String,
    column,
    func,
    insert,
    inspect,
    select,
    table,
    text,
    update,
)

from digest import database
from digest.domain import ArticleDraft, DeliveryStatus, Frequency, Schedule, SubscriberStatus
from digest.errors import DatabaseError
from digest.ledger import Ledger, PlanRules
from digest.models import ArticleRow, Base, DeliveryRow, SubscriberRow
from digest.store import Store

# The tables as revision 0002 left them: no email_key yet.
OLD_SUBSCRIBERS = table(
    "subscribers",
    column("id", Integer),
    column("email", String),
    column("frequency", String),
    column("status", String),
    column("timezone", String),
    column("token_version", Integer),
    column("created_at", DateTime),
    column("confirmed_at", DateTime),
    column("unsubscribed_at", DateTime),
    column("cursor", Integer),
    column("anchor", DateTime),
    column("bounces", Integer),
)
OLD_DELIVERIES = table(
    "deliveries",
    column("subscriber_id", Integer),
    column("period_key", String),
    column("status", String),
    column("slot_at", DateTime),
    column("cursor_from", Integer),
    column("cursor_to", Integer),
    column("attempts", Integer),
    column("next_attempt_at", DateTime),
    column("message_id", String),
    column("planned_at", DateTime),
)
NOVEMBER = datetime(2026, 11, 1, 9, 0)  # stored naive, in UTC


def day(n: int) -> datetime:
    return NOVEMBER + timedelta(days=n)


def old_reader(
    email: str, status: str, created: int, cursor: int, anchor: int, **more: object
) -> dict[str, object]:
    return {
        "email": email,
        "frequency": "weekly",
        "status": status,
        "timezone": "UTC",
        "token_version": 1,
        "created_at": day(created),
        "confirmed_at": None if status == "pending" else day(created),
        "unsubscribed_at": None,
        "cursor": cursor,
        "anchor": day(anchor),
        "bounces": 0,
    } | more


def old_delivery(subscriber_id: int, period: str, status: str) -> dict[str, object]:
    return {
        "subscriber_id": subscriber_id,
        "period_key": period,
        "status": status,
        "slot_at": day(1),
        "cursor_from": 0,
        "cursor_to": 1,
        "attempts": 0,
        "next_attempt_at": day(1),
        "message_id": f"<{subscriber_id}.{period}@example.org>",
        "planned_at": day(1),
    }


def test_migrations_create_exactly_the_schema_the_models_describe(database_url: str) -> None:
    engine = database.connect(database_url)
    database.upgrade(engine)
    database.upgrade(engine)  # a second run changes nothing and does not fail
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert differences == []


def test_a_database_without_schema_is_refused_with_the_command_to_run(database_url: str) -> None:
    engine = database.connect(database_url)
    with pytest.raises(DatabaseError, match="digest db upgrade"):
        database.check_current(engine)
    engine.dispose()


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = database.connect(f"sqlite:///{tmp_path / 'x.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == database.SQLITE_BUSY_TIMEOUT_MS
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()


def test_on_sqlite_a_read_sees_the_last_commit_and_does_not_wait_for_a_write_in_flight(
    tmp_path: Path,
) -> None:
    """A reader's page and /healthz read while a send run holds the write lock, as WAL allows."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    store, writer = Store(database.connect(url)), database.connect(url)
    database.upgrade(writer)
    now = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    store.upsert_articles(
        [ArticleDraft("https://miasfeed.example/a", "A", "", "News", 2, now)], now
    )
    with database.writing(writer) as conn:  # BEGIN IMMEDIATE: SQLite's one write lock is taken
        conn.execute(update(ArticleRow).values(title="B"))
        # Before, each read began IMMEDIATE too, and waited here for the 30 s busy timeout.
        assert store.ping()
        assert [article.title for article in store.recent_articles(5)] == ["A"]
    assert [article.title for article in store.recent_articles(5)] == ["B"]
    store.engine.dispose()
    writer.dispose()


def test_an_unreachable_database_is_one_clear_error() -> None:
    engine = database.connect("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot open the database"):
        database.check_current(engine)
    engine.dispose()


def test_migration_0003_merges_case_variants_with_an_unsubscribe_of_any_winning_and_says_so(
    database_url: str, cli: Cli
) -> None:
    engine = database.connect(database_url)
    database.upgrade(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            insert(OLD_SUBSCRIBERS),
            [
                old_reader("Reader@example.org", "active", created=1, cursor=5, anchor=10),
                old_reader("reader@example.org", "active", 2, 7, 17, bounces=1),
                old_reader("READER@example.org", "unsubscribed", 3, 3, 3, unsubscribed_at=day(20)),
                old_reader("Mia@example.org", "pending", created=1, cursor=0, anchor=1),
                old_reader("mia@example.org", "active", created=2, cursor=4, anchor=9),
                old_reader("Ñandú@example.org", "active", created=1, cursor=2, anchor=8),
                old_reader("ñandú@example.org", "bounced", 5, 1, 6, bounces=3),
                old_reader("solo@example.org", "active", created=1, cursor=6, anchor=8),
            ],
        )
        ids = dict(conn.execute(select(OLD_SUBSCRIBERS.c.email, OLD_SUBSCRIBERS.c.id)).all())
        conn.execute(
            insert(OLD_DELIVERIES),
            [
                old_delivery(ids["Reader@example.org"], "2026-W45", "sent"),
                old_delivery(ids["Reader@example.org"], "2026-W47", "pending"),
                old_delivery(ids["reader@example.org"], "2026-W45", "skipped"),
                old_delivery(ids["reader@example.org"], "2026-W46", "sent"),
                old_delivery(ids["READER@example.org"], "2026-W46", "failed"),
                old_delivery(ids["mia@example.org"], "2026-W46", "sent"),
                old_delivery(ids["solo@example.org"], "2026-W46", "sent"),
            ],
        )

    upgraded = cli("db", "upgrade")

    assert upgraded.code == 0, upgraded.err
    assert "merged 7 readers whose addresses differ only in case into 3" in upgraded.out
    store = Store(engine)
    assert sorted(s.email for s in store.subscribers()) == [
        "Reader@example.org",
        "mia@example.org",
        "solo@example.org",
        "Ñandú@example.org",
    ]
    # The oldest active spelling survives; the unsubscribe of the third spelling wins; the
    # furthest cursor and anchor stand, so no article and no week comes twice.
    reader = store.find_subscriber("rEaDeR@example.org")
    assert reader.id == ids["Reader@example.org"]
    assert reader.status is SubscriberStatus.UNSUBSCRIBED
    assert (reader.cursor, reader.anchor, reader.bounces) == (7, day(17).replace(tzinfo=UTC), 1)
    assert reader.created_at == day(1).replace(tzinfo=UTC)
    # One delivery per week, the sent one kept; the planned one goes (it is planned again).
    assert [(p, s) for p, s, _, _ in deliveries_of(store.engine, "reader@example.org")] == [
        ("2026-W45", DeliveryStatus.SENT),
        ("2026-W46", DeliveryStatus.SENT),
    ]
    mia = store.find_subscriber("MIA@example.org")
    assert (mia.id, mia.status, mia.cursor) == (ids["mia@example.org"], SubscriberStatus.ACTIVE, 4)
    nandu = store.find_subscriber("ÑANDÚ@example.org")
    assert (nandu.id, nandu.status, nandu.bounces) == (
        ids["Ñandú@example.org"],
        SubscriberStatus.BOUNCED,
        3,
    )
    assert store.find_subscriber("solo@example.org").cursor == 6
    with engine.connect() as conn:
        assert conn.scalar(select(func.count()).select_from(OLD_DELIVERIES)) == 4
    engine.dispose()


def test_migration_0003_on_a_database_without_case_variants_says_it_merged_none(
    database_url: str,
) -> None:
    engine = database.connect(database_url)
    database.upgrade(engine, "0002")
    assert database.upgrade(engine) == ["no readers' addresses differ only in case: none merged"]
    assert database.upgrade(engine) == []  # nothing ran the second time
    engine.dispose()


def migrate(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(database.MIGRATIONS))
    # As database.upgrade does: on SQLite a table rebuilt with foreign keys on would take every
    # row that refers to it along (a reader's deliveries).
    with (
        engine.connect() as connection,
        database.foreign_keys_deferred(connection),
        connection.begin(),
    ):
        config.attributes["connection"] = connection
        step(config, revision)


def test_feed_validators_migrate_up_and_down_keeping_each_feeds_record(database_url: str) -> None:
    engine = database.connect(database_url)
    migrate(engine, command.upgrade, "0003")
    row = "('https://miasfeed.example/rss', '2026-11-24 06:00:00', 2, 5)"
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO feeds (source, polled_at, failures, errors_total) VALUES {row}")
        )
    migrate(engine, command.upgrade, "0004")
    with engine.begin() as conn:
        feed = conn.execute(text("SELECT failures, etag, last_modified FROM feeds")).one()
        assert tuple(feed) == (2, None, None)
        conn.execute(text("UPDATE feeds SET etag = '\"v1\"'"))
    migrate(engine, command.downgrade, "0003")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT source, failures FROM feeds")).one().failures == 2
    engine.dispose()


def test_migration_0006_gives_existing_articles_no_picture_and_no_pick_and_goes_back_in_place(
    database_url: str,
) -> None:
    engine = database.connect(database_url)
    migrate(engine, command.upgrade, "0005")
    row = "('https://miasfeed.example/a', 'A', '', 'News', 2, '2026-11-24 06:00:00', "
    row += "'2026-11-24 06:00:00', '2026-11-24 06:00:00')"
    columns = (
        "url, title, summary, category, reading_minutes, published_at, ingested_at, updated_at"
    )
    with engine.begin() as conn:
        conn.execute(text(f"INSERT INTO articles ({columns}) VALUES {row}"))
    migrate(engine, command.upgrade, "0006")
    store = Store(engine)
    (kept,) = store.recent_articles(5)
    assert (kept.title, kept.image_url, kept.featured) == ("A", None, False)
    migrate(engine, command.downgrade, "0005")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT title FROM articles")).scalar_one() == "A"
    engine.dispose()


def test_migration_0007_gives_existing_readers_every_topic_no_pause_and_the_sites_schedule(
    database_url: str,
) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    readers = {"a@example.org": Frequency.WEEKLY}
    seed(database_url, readers, [1], confirmed_at=monday - timedelta(days=7), imported_at=monday)
    engine = database.connect(database_url)
    Ledger(Store(engine)).plan(monday, PlanRules(Schedule(), None, 100, "example.org"))
    migrate(engine, command.downgrade, "0006")
    migrate(engine, command.upgrade, "0007")
    reader = Store(engine).find_subscriber("a@example.org")
    choices = (reader.topics, reader.paused_until, reader.send_time, reader.send_weekday)
    assert choices == (None, None, None, None)
    migrate(engine, command.downgrade, "0006")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT email FROM subscribers")).scalar_one() == "a@example.org"
        # The reader's planned digest is still there: the rebuilt table took no delivery along.
        assert conn.execute(text("SELECT count(*) FROM deliveries")).scalar_one() == 1
    engine.dispose()


def test_migration_0008_gives_articles_their_topic_key_and_deliveries_topics_and_goes_back(
    database_url: str,
) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    seed(database_url, {}, [1, 2], confirmed_at=monday, imported_at=monday)
    engine = database.connect(database_url)
    migrate(engine, command.downgrade, "0007")
    with engine.begin() as conn:
        conn.execute(text("UPDATE articles SET category = 'Public Health' WHERE id = 2"))
    migrate(engine, command.upgrade, "0008")
    with engine.connect() as conn:
        topics = conn.execute(text("SELECT id, topic FROM articles ORDER BY id")).all()
    assert [tuple(row) for row in topics] == [
        (1, "medical news and research"),
        (2, "public health"),
    ]
    assert "ix_articles_topic" in {
        index["name"] for index in inspect(engine).get_indexes("articles")
    }
    assert "topics" in {column["name"] for column in inspect(engine).get_columns("deliveries")}
    migrate(engine, command.downgrade, "0007")
    assert "topic" not in {column["name"] for column in inspect(engine).get_columns("articles")}
    assert "topics" not in {c["name"] for c in inspect(engine).get_columns("deliveries")}
    engine.dispose()


def test_migration_0005_swaps_the_claim_indexes_both_ways_in_place_and_claims_what_0004_left(
    database_url: str,
) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    readers = {"a@example.org": Frequency.WEEKLY, "b@example.org": Frequency.WEEKLY}
    seed(database_url, readers, [1], confirmed_at=monday - timedelta(days=7), imported_at=monday)
    engine = database.connect(database_url)
    migrate(engine, command.downgrade, "0004")
    assert set(delivery_indexes(engine)) == {
        "ix_deliveries_claimable",
        "ix_deliveries_subscriber_id",
    }
    # As revision 0004 leaves it: one digest planned and another claimed by a worker that died,
    # written as rows (today's planning reads the readers' columns of 0007).
    with engine.begin() as conn:
        ids = list(conn.scalars(select(SubscriberRow.id).order_by(SubscriberRow.id)))
        planned = {
            "period_key": "2026-W49", "slot_at": monday - timedelta(hours=1), "cursor_from": 0,
            "cursor_to": 1, "attempts": 0, "next_attempt_at": monday, "planned_at": monday,
            "lease_owner": None, "lease_until": None,
        }  # fmt: skip
        conn.execute(
            insert(DeliveryRow),
            [
                planned | {"subscriber_id": ids[0], "status": "pending", "message_id": "<a@x>"},
                planned
                | {"subscriber_id": ids[1], "status": "sending", "message_id": "<b@x>"}
                | {"lease_owner": "gone", "lease_until": monday + timedelta(minutes=15)},
            ],
        )
    ledger = Ledger(Store(engine))

    database.upgrade(engine)

    indexes = delivery_indexes(engine)
    assert set(indexes) == {
        "ix_deliveries_due",
        "ix_deliveries_leased",
        "ix_deliveries_subscriber_id",
        "ix_deliveries_message_id",  # 0009's
    }
    assert "'pending'" in indexes["ix_deliveries_due"]  # partial: rows of one status each
    assert "'sending'" in indexes["ix_deliveries_leased"]
    later = monday + timedelta(hours=1)
    claims = ledger.claim("w1", later, timedelta(minutes=15), 10)
    assert sorted(c.email for c in claims) == sorted(readers)  # the lease that ran out too
    engine.dispose()


def delivery_indexes(engine: Engine) -> dict[str, str]:
    """Each index of deliveries (not the unique keys PostgreSQL lists too) and its WHERE, if any."""
    where = f"{engine.dialect.name}_where"
    return {
        str(index["name"]): str(index["dialect_options"].get(where, ""))
        for index in inspect(engine).get_indexes("deliveries")
        if str(index["name"]).startswith("ix_")
    }


def test_migration_0009_adds_the_notices_and_going_back_leaves_a_complained_reader_unsubscribed(
    database_url: str,
) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    seed(
        database_url,
        {"a@example.org": Frequency.WEEKLY},
        [1],
        confirmed_at=monday,
        imported_at=monday,
    )
    engine = database.connect(database_url)
    assert "notices" in inspect(engine).get_table_names()
    with engine.begin() as conn:
        conn.execute(text("UPDATE subscribers SET status = 'complained'"))
    migrate(engine, command.downgrade, "0008")
    assert "notices" not in inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM subscribers")).scalar_one() == "unsubscribed"
    migrate(engine, command.upgrade, "0009")
    assert "notices" in inspect(engine).get_table_names()
    engine.dispose()
