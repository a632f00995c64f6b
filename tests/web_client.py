"""An ASGI app under test: called in process by an httpx client, or served over real HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from processes import wait_for
from starlette.types import ASGIApp

from digest.demo.catcher import free_port


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


@contextmanager
def served(app: ASGIApp, port: int | None = None) -> Iterator[str]:
    """The app over real HTTP, under uvicorn in a thread on 127.0.0.1 (on port, else a free
    one), without its lifespan; yields its base URL, and stops the server after."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "uvicorn to start")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()
