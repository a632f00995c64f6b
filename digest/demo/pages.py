"""The demo's own pages, beside the daemon's: the caught mail, listed and shown as its reader sees it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from digest.config import PROJECT_TEMPLATES
from digest.demo import outbox
from digest.demo.newsroom import Newsroom

DISPATCH_SECONDS = 10  # short, so whatever becomes due (a new article, a reader) goes out soon
SAMPLE_PICTURES = Path(__file__).resolve().parent.parent / "samples" / "pictures"
# Caught mail is someone else's HTML: its own inline styles and data: images, and nothing
# fetched but the sample articles' pictures, which the demo serves itself.
MAIL_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:"
    ),
    "X-Content-Type-Options": "nosniff",
}


def routes(mail: Path, site_name: str, newsroom: Newsroom) -> Sequence[BaseRoute]:
    """`/`: the caught mail, newest first; `/outbox/NAME`: one mail's HTML part as its reader sees
    it; `/outbox/NAME.eml` or `?raw=1`: the whole message; `/pictures/NAME.png`: the sample
    articles' pictures. Unknown names are 404."""
    env = Environment(loader=FileSystemLoader(PROJECT_TEMPLATES / "demo"), autoescape=True)
    listing = env.get_template("outbox.html.j2")

    # Plain functions, as in web.py: Starlette runs them in its thread pool, off the event loop.
    def index(request: Request) -> HTMLResponse:
        page = listing.render(
            mails=outbox.read(mail),
            folder=mail.resolve(),
            site_name=site_name,
            interval=DISPATCH_SECONDS,
            today=newsroom.now(),
            articles_left=newsroom.left,
        )
        return HTMLResponse(page, headers=MAIL_HEADERS)

    def one(request: Request) -> Response:
        name: str = request.path_params["name"]
        raw = name.endswith(".eml") or request.query_params.get("raw") == "1"
        caught = outbox.find(mail, name.removesuffix(".eml"))
        if caught is not None and raw:
            body = caught.eml.read_bytes()
            return Response(body, media_type="text/plain; charset=utf-8", headers=MAIL_HEADERS)
        if caught is None or caught.html is None:
            return Response("no such mail in the outbox", 404, media_type="text/plain")
        return HTMLResponse(caught.html.read_bytes(), headers=MAIL_HEADERS)

    return [
        Route("/", index),
        Route("/outbox/{name}", one),
        Mount("/pictures", StaticFiles(directory=SAMPLE_PICTURES), name="pictures"),
    ]
