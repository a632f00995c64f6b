"""Database fixtures: every store test runs on SQLite and on a throwaway PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_cluster import PgCluster
from sqlalchemy import Engine, MetaData, create_engine, select

from digest import database
from digest.ledger import Ledger
from digest.store import Store


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
