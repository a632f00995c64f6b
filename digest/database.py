"""Engines, transactions and schema: SQLite tuned for one writer at a time, PostgreSQL as it comes.

The helpers both table owners (store.py and ledger.py) use: short read and write transactions whose
failures become one DatabaseError, and inserts with this database's ON CONFLICT clause. Alembic
upgrades and the schema check live here too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Row,
    String,
    create_engine,
    event,
    func,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from digest.errors import DatabaseError
from digest.models import Base

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
_READ_ONLY = "digest_read_only"  # the execution option reading() sets for the begin event
PG_CONNECT_TIMEOUT_SECONDS = 10  # an unreachable server is an error, not a hang
AnyRow = Row[*tuple[Any, ...]]


def connect(url: str) -> Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url)
    return create_engine(
        url, pool_pre_ping=True, connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS}
    )


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event own transactions, so writes can BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front: a second process waits (busy_timeout) instead
        # of failing half-way with "database is locked" when a read transaction turns into a write.
        # A read takes no lock at all (WAL gives it the last commit), so a reader's page or
        # /healthz never waits behind a send run's claims and records.
        read_only = connection.get_execution_options().get(_READ_ONLY, False)
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")

    return engine


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """One write transaction (BEGIN IMMEDIATE on SQLite), committed on leaving."""
    with _translated(), engine.begin() as conn:
        yield conn


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """One read-only transaction: on SQLite it sees the last commit and waits for no writer."""
    with _translated(), engine.connect() as conn:
        yield conn.execution_options(**{_READ_ONLY: True})


@contextmanager
def _translated() -> Iterator[None]:
    """Database failures become one clear DatabaseError instead of a driver traceback."""
    try:
        yield
    except OperationalError as exc:
        raise database_error(exc, "the database failed") from exc


def upsert(engine: Engine, table: type[Base]) -> postgresql.Insert | sqlite.Insert:
    """INSERT with this database's ON CONFLICT clause, for races between several processes."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def insert_ignoring_conflicts(engine: Engine, table: type[Base]) -> Insert:
    return upsert(engine, table).on_conflict_do_nothing()


def random_hex(engine: Engine) -> ColumnElement[str]:
    """32 random hex digits made by the database, a different value on every row of a statement."""
    if engine.dialect.name == "postgresql":
        return func.md5(func.gen_random_uuid().cast(String))
    return func.lower(func.hex(func.randomblob(16)))


def _alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Create or migrate the schema to the newest revision (or an older one, for tests of a
    migration); harmless when already there.

    Returns what the migrations that ran had to tell, e.g. how many readers one merged.
    """
    config = _alembic_config(engine)
    notes: list[str] = []
    config.attributes["notes"] = notes
    try:
        with (
            engine.connect() as connection,
            foreign_keys_deferred(connection),
            connection.begin(),
        ):
            config.attributes["connection"] = connection
            command.upgrade(config, revision)
            _check_foreign_keys(connection)
    except SQLAlchemyError as exc:
        raise database_error(exc, "cannot upgrade the database") from exc
    return notes


@contextmanager
def foreign_keys_deferred(connection: Connection) -> Iterator[None]:
    """SQLite: foreign keys off while migrating, checked before commit instead.

    Alembic changes a SQLite table by copying it and dropping the old one, and with foreign keys
    on that DROP deletes every row that refers to it (every delivery of every reader). The
    pragma is ignored inside a transaction, so it is set on the driver connection beforehand.
    """
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        driver.execute("PRAGMA foreign_keys=ON")


def _check_foreign_keys(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").first()
        if broken is not None:
            raise DatabaseError(f"the migration broke a foreign key: {tuple(broken)}")


def check_current(engine: Engine) -> None:
    """Refuse to work on a database whose schema is missing or old."""
    head = ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_revision()
    except SQLAlchemyError as exc:
        raise database_error(exc, "cannot open the database") from exc
    if current != head:
        state = "has no schema yet" if current is None else "schema is out of date"
        raise DatabaseError(f"the database {state}: run `digest db upgrade`")


def database_error(exc: BaseException, failing: str) -> DatabaseError:
    """One line for a person; a lock another process holds is "busy", whichever step met it."""
    text = _one_line(exc)
    if "locked" in text or "busy" in text:
        return DatabaseError(f"the database is busy, try again: {text}")
    return DatabaseError(f"{failing}: {text}")


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
