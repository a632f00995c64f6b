"""Health in process: 200 when the database answers, 503 when it does not."""

from __future__ import annotations

from datetime import UTC, datetime

from web_client import in_process_client

from digest import database
from digest.app import Services
from digest.config import load
from digest.daemon import asgi_app
from digest.store import Store

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UNREACHABLE = "postgresql+psycopg://digest@127.0.0.1:1/digest"  # nothing listens on port 1
ENV = {"DIGEST_SECRET_KEY": "h" * 40, "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>"}


def healthz(services: Services) -> tuple[int, dict[str, object]]:
    with in_process_client(asgi_app(services, lambda: NOW)) as client:
        response = client.get("/healthz")
    return response.status_code, response.json()


def test_healthz_answers_503_naming_the_database_when_it_is_unreachable() -> None:
    engine = database.connect(UNREACHABLE)
    services = Services(load(None, ENV | {"DIGEST_DATABASE_URL": UNREACHABLE}), Store(engine))
    try:
        status, body = healthz(services)
    finally:
        engine.dispose()
    assert status == 503
    assert body["database"] == "unreachable"


def test_healthz_answers_200_when_the_database_answers(store: Store) -> None:
    status, body = healthz(Services(load(None, ENV), store))
    assert status == 200
    assert body["database"] == "ok"
