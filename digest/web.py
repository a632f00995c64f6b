"""Starlette routes. Each route: check the request, one call, one page. No queries here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Health(Protocol):
    def database_ok(self) -> bool: ...
    def scheduler_state(self) -> dict[str, Any]: ...
    def metrics(self) -> bytes: ...


def create_app(
    health: Health,
    lifespan: Callable[[Starlette], AbstractAsyncContextManager[None]] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    # Plain functions: Starlette runs them in its thread pool, so a slow database cannot stall
    # the event loop that also drives the scheduler and the SMTP connections.
    def healthz(request: Request) -> JSONResponse:
        database = health.database_ok()
        body = {
            "database": "ok" if database else "unreachable",
            "scheduler": health.scheduler_state(),
        }
        return JSONResponse(body, status_code=200 if database else 503)

    def metrics(request: Request) -> Response:
        return Response(health.metrics(), media_type=METRICS_CONTENT_TYPE)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/metrics", metrics), *extra_routes],
        lifespan=lifespan,
    )
