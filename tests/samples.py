"""The site and personal links that the rendering tests give the Renderer."""

from __future__ import annotations

from digest.render import Links, Site

SITE = Site(
    name="Mia's Feed",
    url="https://miasfeed.example",
    sender="Mia's Feed <digest@example.org>",
    list_id="Mia's Feed digest <digest.example.org>",
)
LINKS = Links(
    unsubscribe="https://digest.example.org/unsubscribe/eyJpZCI6NDJ9.Zx1c9A",
    preferences="https://digest.example.org/preferences/eyJpZCI6NDJ9.Qm7aPw",
)
