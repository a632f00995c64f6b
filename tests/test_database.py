"""Schema and engine: migrations match the models, upgrades are idempotent, SQLite runs in WAL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from digest import database
from digest.errors import DatabaseError
from digest.models import Base


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


def test_an_unreachable_database_is_one_clear_error() -> None:
    engine = database.connect("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(DatabaseError, match="cannot open the database"):
        database.check_current(engine)
    engine.dispose()


def migrate(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(database.MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        step(config, revision)


def test_feed_validators_migrate_up_and_down_keeping_each_feeds_record(database_url: str) -> None:
    engine = database.connect(database_url)
    migrate(engine, command.upgrade, "0002")
    row = "('https://miasfeed.example/rss', '2026-11-24 06:00:00', 2, 5)"
    with engine.begin() as conn:
        conn.execute(
            text(f"INSERT INTO feeds (source, polled_at, failures, errors_total) VALUES {row}")
        )
    migrate(engine, command.upgrade, "0003")
    with engine.begin() as conn:
        feed = conn.execute(text("SELECT failures, etag, last_modified FROM feeds")).one()
        assert tuple(feed) == (2, None, None)
        conn.execute(text("UPDATE feeds SET etag = '\"v1\"'"))
    migrate(engine, command.downgrade, "0002")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT source, failures FROM feeds")).one().failures == 2
    engine.dispose()
