"""Fresh copies of a seeded database, one per measured run: seeding happens once per benchmark.

SQLite: the seeded file, checkpointed, copied. PostgreSQL: a throwaway cluster (the test suite's
tests/pg_cluster.py) and `CREATE DATABASE … TEMPLATE seeded`, a file-level copy as well.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pg_cluster import PgCluster  # the test suite's helper, reused

TEMPLATE = "seeded"


class SqliteCopies:
    def __init__(self, folder: Path) -> None:
        self.template = folder / f"{TEMPLATE}.db"
        self._folder = folder

    @property
    def template_url(self) -> str:
        return f"sqlite:///{self.template}"

    def sealed(self) -> None:
        """Fold the write-ahead log into the file, so that the file alone is the database."""
        with contextlib.closing(sqlite3.connect(self.template)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextlib.contextmanager
    def copy(self, name: str) -> Iterator[str]:
        path = self._folder / f"{name}.db"
        shutil.copyfile(self.template, path)
        try:
            yield f"sqlite:///{path}"
        finally:
            for leftover in self._folder.glob(f"{name}.db*"):
                leftover.unlink()


class PostgresCopies:
    """A throwaway cluster holding the seeded template; stop() removes it all."""

    def __init__(self) -> None:
        self._cluster = PgCluster().start()
        self.template_url = self._cluster.create_database(TEMPLATE)

    def stop(self) -> None:
        self._cluster.stop()

    @contextlib.contextmanager
    def copy(self, name: str) -> Iterator[str]:
        self._execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}"), name, TEMPLATE)
        try:
            yield self._cluster.url(name)
        finally:
            self._execute(sql.SQL("DROP DATABASE {} WITH (FORCE)"), name)

    def _execute(self, statement: sql.SQL, *names: str) -> None:
        assert self._cluster.port is not None
        with psycopg.connect(
            host="127.0.0.1", port=self._cluster.port, user="postgres", autocommit=True
        ) as conn:
            conn.execute(statement.format(*map(sql.Identifier, names)))
