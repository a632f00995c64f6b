"""An httpx client that calls an ASGI app in process, for tests that do not need a real server."""

from __future__ import annotations

import asyncio

import httpx
from starlette.types import ASGIApp


class _InProcess(httpx.BaseTransport):
    """Calls the ASGI app directly, background tasks included, from a plain synchronous client."""

    def __init__(self, app: ASGIApp) -> None:
        # As a server does: a bug is answered with the 500 page, not raised into the test.
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> httpx.Response:
            response = await self._asgi.handle_async_request(request)
            body = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=body)

        return asyncio.run(call())


def in_process_client(app: ASGIApp) -> httpx.Client:
    # The lifespan (and with it the dispatcher) is not started: pages need neither.
    return httpx.Client(transport=_InProcess(app), base_url="http://testserver")
