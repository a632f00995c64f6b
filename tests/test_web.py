"""The web endpoints in process: health answers 503 when the database is down."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpx

from digest import database
from digest.app import Services
from digest.config import load
from digest.daemon import asgi_app
from digest.store import Store

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
UNREACHABLE = "postgresql+psycopg://digest@127.0.0.1:1/digest"  # nothing listens on port 1


def get(services: Services, path: str) -> httpx.Response:
    async def fetch() -> httpx.Response:
        transport = httpx.ASGITransport(app=asgi_app(services, lambda: NOW))
        async with httpx.AsyncClient(transport=transport, base_url="http://digest") as client:
            return await client.get(path)

    return asyncio.run(fetch())


def test_healthz_answers_503_naming_the_database_when_it_is_unreachable() -> None:
    engine = database.connect(UNREACHABLE)
    services = Services(load(None, {"DIGEST_DATABASE_URL": UNREACHABLE}), Store(engine))
    try:
        response = get(services, "/healthz")
    finally:
        engine.dispose()
    assert response.status_code == 503
    assert response.json()["database"] == "unreachable"


def test_healthz_answers_200_when_the_database_answers(store: Store) -> None:
    services = Services(load(None, {}), store)
    response = get(services, "/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"
