"""Digest and confirmation mails, from templates to the bytes SMTP sends (through mime.py).

The expensive work (Jinja, sanitising, CSS inlining, transfer encoding) happens once per distinct
window in `digest_body`; `digest_message` runs once per subscriber, so it only encodes two links and
joins pre-encoded bytes (DESIGN §4: `EmailMessage` costs more than half of a naive send). The size
cap on the HTML part counts its bytes as sent (Gmail clips the HTML past about 102 KB, hiding the
unsubscribe link in the footer), with room for the longest personal links.
"""

from __future__ import annotations

import html
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import css_inline
import nh3
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from digest.domain import Article, Frequency, Site
from digest.mime import Part, assemble, mailbox, one_line, structured, unstructured

_BLOCK_END = re.compile(r"</p>|<br>|</li>|</blockquote>")
# Room kept for each personal link (HTML-escaped UTF-8, line breaks as CRLF) when sizing the shared
# HTML, so the part as sent stays under max_html_bytes for any links up to this many bytes. Ours are
# the base URL, "/preferences/" and a token of at most 100 characters: about 150 bytes.
LINK_ROOM = 400


@dataclass(frozen=True, slots=True)
class Links:
    unsubscribe: str
    preferences: str

    @property
    def urls(self) -> tuple[str, str]:
        """In the order of Renderer's placeholders."""
        return (self.unsubscribe, self.preferences)


@dataclass(frozen=True, slots=True)
class _Item:
    """An article as both templates show it: one-line title, safe link, sanitised summary."""

    title: str
    url: str
    category: str
    minutes: int
    summary_html: Markup
    summary_text: str


@dataclass(frozen=True, slots=True)
class DigestBody:
    """The part of a digest shared by every subscriber with the same window."""

    subject: str
    frequency: Frequency
    shown: int  # articles in the mail
    total: int  # articles in the window; the rest are "N more on the site"
    subject_header: bytes
    html: Part
    text: Part


def preview_html(body: DigestBody, links: Links) -> str:
    return body.html.fill(links.urls)


def preview_text(body: DigestBody, links: Links) -> str:
    return body.text.fill(links.urls)


class Renderer:
    def __init__(
        self,
        templates_dir: Path,
        site: Site,
        *,
        max_articles: int = 20,
        max_html_bytes: int = 102_000,
        link_room: int = LINK_ROOM,
    ) -> None:
        self.site = site
        self.max_articles = max_articles
        self.max_html_bytes = max_html_bytes  # of the HTML part as sent, after transfer encoding
        self.link_room = link_room
        self._env = Environment(
            loader=FileSystemLoader(templates_dir),
            # select_autoescape()'s default matches ".html" only, not our ".html.j2".
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        # A <style> marked data-css-inline="ignore" stays in <head> as written (the templates keep
        # the font stack there, not on every cell); of the others, only what was not inlined stays.
        self._inliner = css_inline.CSSInliner(
            keep_style_tags=True,
            remove_inlined_selectors=True,
            keep_at_rules=True,
            load_remote_stylesheets=False,
        )
        # Summaries were sanitised at import; again here because this is where they become markup.
        self._summary_html = nh3.Cleaner(
            tags={"p", "br", "a", "em", "strong", "b", "i", "ul", "ol", "li", "blockquote"},
            attributes={"a": {"href"}},
            url_schemes={"http", "https"},
            url_relative="deny",
        )
        self._summary_text = nh3.Cleaner(tags=set())
        # Unguessable, so no article text can pose as a personal link.
        nonce = secrets.token_hex(16)
        self._placeholders = (f"unsubscribe{nonce}", f"preferences{nonce}")
        self._from = f"From: {mailbox(site.sender)}".encode()
        self._list_id = f"List-Id: {mailbox(site.list_id)}".encode()

    def digest_body(self, frequency: Frequency, articles: Sequence[Article]) -> DigestBody:
        items = [self._item(a) for a in articles[: self.max_articles]]
        encoded: dict[int, Part] = {}

        def fits(count: int) -> bool:
            html_body = self._digest_html(frequency, items[:count], len(articles))
            if len(html_body) >= self.max_html_bytes:  # too long before it is even encoded
                return False
            encoded[count] = self._part(html_body, is_html=True)
            return encoded[count].largest < self.max_html_bytes

        shown = len(items)
        if not fits(shown):
            # Size grows with the count, so bisect for the longest prefix that fits (a few renders
            # instead of one per article). If none fits, the mail still says "N more".
            low, high = 0, shown - 1
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if fits(middle) else (low, middle - 1)
            shown = low
        if shown not in encoded:  # no article fits, and the bare digest is not encoded yet
            html_body = self._digest_html(frequency, [], len(articles))
            encoded[shown] = self._part(html_body, is_html=True)
        context = self._digest_context(frequency, items[:shown], len(articles))
        text_body = self._env.get_template("email/digest.txt.j2").render(context)
        return DigestBody(
            subject=context["subject"],
            frequency=frequency,
            shown=shown,
            total=len(articles),
            subject_header=unstructured("Subject", context["subject"]),
            html=encoded[shown],
            text=self._part(text_body, is_html=False),
        )

    def digest_message(
        self,
        body: DigestBody,
        recipient: str,
        links: Links,
        *,
        message_id: str,
        date: datetime,
        one_click: bool,
    ) -> bytes:
        headers = [
            self._from,
            structured("To", recipient),
            body.subject_header,
            structured("Date", format_datetime(date)),
            structured("Message-ID", message_id),
            self._list_id,
            structured("List-Unsubscribe", f"<{links.unsubscribe}>"),
        ]
        if one_click:
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        return assemble(headers, body.text.encode(links.urls), body.html.encode(links.urls))

    def confirmation_message(
        self,
        recipient: str,
        confirm_url: str,
        frequency: Frequency,
        *,
        message_id: str,
        date: datetime,
        expires_days: int = 7,
    ) -> bytes:
        subject = f"Confirm your subscription to {self.site.name}"
        context = {
            "site": self.site,
            "subject": subject,
            "frequency": frequency.value,
            "confirm_url": confirm_url,
            "expires_days": expires_days,
        }
        html_body = self._inliner.inline(
            self._env.get_template("email/confirm.html.j2").render(context)
        )
        text_body = self._env.get_template("email/confirm.txt.j2").render(context)
        # Deliberately no List-Unsubscribe: nobody is subscribed yet (RELIABILITY rule 3).
        headers = [
            self._from,
            structured("To", recipient),
            unstructured("Subject", subject),
            structured("Date", format_datetime(date)),
            structured("Message-ID", message_id),
        ]
        text_part = Part.cut(text_body, (), is_html=False, link_room=0)
        html_part = Part.cut(html_body, (), is_html=True, link_room=0)
        return assemble(headers, text_part.encode(), html_part.encode())

    def _item(self, article: Article) -> _Item:
        url = one_line(article.url).strip()
        if not url.lower().startswith(("https://", "http://")):
            url = self.site.url
        summary = self._summary_html.clean(article.summary)
        # Block ends become line breaks before the tags go, or paragraphs would run together.
        text = html.unescape(self._summary_text.clean(_BLOCK_END.sub("\n", summary)))
        paragraphs = (" ".join(line.split()) for line in text.splitlines())
        return _Item(
            title=one_line(article.title).strip() or url,
            url=url,
            category=one_line(article.category).strip() or "Other news",
            minutes=max(article.reading_minutes, 1),
            summary_html=Markup(summary),  # noqa: S704 -- nh3 has just cleaned it
            summary_text="\n\n".join(p for p in paragraphs if p),
        )

    def _digest_context(
        self, frequency: Frequency, items: list[_Item], total: int
    ) -> dict[str, Any]:
        groups: dict[str, list[_Item]] = {}
        for item in items:  # newest first, so categories come in order of their newest article
            groups.setdefault(item.category, []).append(item)
        minutes = sum(item.minutes for item in items)
        count = f"{total} new article{'' if total == 1 else 's'}"
        shown = "" if len(items) == total else f" · the latest {len(items)} below"
        return {
            "site": self.site,
            "frequency": frequency.value,
            "subject": f"Your {frequency.value} digest from {self.site.name}: {count}",
            "overview": f"{count}{shown} · {minutes} min read",
            "groups": list(groups.items()),
            "first_title": items[0].title if items else "",
            "more": total - len(items),
            "unsubscribe_url": self._placeholders[0],
            "preferences_url": self._placeholders[1],
        }

    def _digest_html(self, frequency: Frequency, items: list[_Item], total: int) -> str:
        context = self._digest_context(frequency, items, total)
        return self._inliner.inline(self._env.get_template("email/digest.html.j2").render(context))

    def _part(self, body: str, *, is_html: bool) -> Part:
        return Part.cut(body, self._placeholders, is_html=is_html, link_room=self.link_room)

    def welcome_message(
        self,
        recipient: str,
        frequency: Frequency,
        rhythm: str,
        first_digest: str,
        *,
        unsubscribe_url: str,
        preferences_url: str,
        message_id: str,
        date: datetime,
        one_click: bool,
    ) -> bytes:
        """The one welcome after confirming: rhythm says when digests come ("every Monday at
        08:00, Madrid (Spain) time"), first_digest ends "Your first digest ..."."""
        subject = f"Welcome to the {frequency.value} digest from {self.site.name}"
        context = {
            "site": self.site,
            "subject": subject,
            "frequency": frequency.value,
            "rhythm": rhythm,
            "first_digest": first_digest,
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": preferences_url,
        }
        html_body = self._inliner.inline(
            self._env.get_template("email/welcome.html.j2").render(context)
        )
        text_body = self._env.get_template("email/welcome.txt.j2").render(context)
        # The reader is subscribed now: List-Unsubscribe as on every digest (RFC 8058).
        headers = [
            self._from,
            structured("To", recipient),
            unstructured("Subject", subject),
            structured("Date", format_datetime(date)),
            structured("Message-ID", message_id),
            self._list_id,
            structured("List-Unsubscribe", f"<{unsubscribe_url}>"),
        ]
        if one_click:
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        text_part = Part.cut(text_body, (), is_html=False, link_room=0)
        html_part = Part.cut(html_body, (), is_html=True, link_room=0)
        return assemble(headers, text_part.encode(), html_part.encode())
