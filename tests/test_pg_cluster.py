"""Tests for the throwaway PostgreSQL cluster helper (tests/pg_cluster.py)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_cluster import PgCluster, PgUnavailable, find_pg_bin, unavailable_action
from sqlalchemy import create_engine, text

pytest_plugins = ["pg_cluster"]


def test_cluster_serves_a_created_database(pg_cluster: PgCluster) -> None:
    name = f"t_{uuid.uuid4().hex[:12]}"
    url = pg_cluster.create_database(name)
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg_cluster.port}/{name}"

    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            assert conn.execute(text("select 1")).scalar_one() == 1
            assert conn.execute(text("select current_database()")).scalar_one() == name
            version = conn.execute(text("show server_version")).scalar_one()
            assert version.startswith("15."), version
            conn.execute(text("create table item (id serial primary key, title text not null)"))
            conn.execute(
                text("insert into item (title) values (:a), (:b)"),
                {"a": "héllo", "b": "world"},
            )
        with engine.connect() as conn:
            rows = conn.execute(text("select id, title from item order by id")).all()
        assert [tuple(row) for row in rows] == [(1, "héllo"), (2, "world")]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"CI": "true"}, "fail"),
        ({}, "skip"),
        ({"CI": "false"}, "skip"),
        ({"CI": ""}, "skip"),
    ],
)
def test_unavailable_action(environ: dict[str, str], expected: str) -> None:
    action, message = unavailable_action("initdb not found", environ)
    assert action == expected
    assert "PostgreSQL unavailable" in message
    assert message.endswith("initdb not found")


def test_empty_pg_bin_is_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PG_BIN", str(tmp_path))
    assert find_pg_bin() == tmp_path
    with pytest.raises(PgUnavailable) as excinfo:
        PgCluster().start()
    reason = excinfo.value.reason
    assert "initdb not found" in reason
    assert "\n" not in reason
    assert str(excinfo.value) == reason
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir the postgres user can read too (pytest's tmp_path is 0700 under root)."""
    path = Path(tempfile.mkdtemp(prefix="pgcluster-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_failed_initdb_is_one_line_and_cleans_up(
    shared_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_bin = shared_tmp / "bin"
    scratch = shared_tmp / "scratch"
    for directory in (fake_bin, scratch):
        directory.mkdir()
        directory.chmod(0o755)
    for tool in ("initdb", "pg_ctl", "postgres"):
        script = fake_bin / tool
        script.write_text("#!/bin/sh\necho 'initdb: noise' >&2\necho 'initdb: boom' >&2\nexit 1\n")
        script.chmod(0o755)
    monkeypatch.setenv("PG_BIN", str(fake_bin))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))

    cluster = PgCluster()
    with pytest.raises(PgUnavailable, match=r"^initdb failed: initdb: boom$"):
        cluster.start()
    assert list(scratch.iterdir()) == []
    assert cluster.root is None
