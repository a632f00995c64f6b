"""Digest and confirmation mails, from templates to the bytes SMTP sends.

The expensive work (Jinja, sanitising, CSS inlining, quoted-printable encoding) happens once per
distinct window in `digest_body`; `digest_message` runs once per subscriber, so it only encodes two
links and joins pre-encoded bytes (DESIGN §4: `EmailMessage` costs more than half of a naive send).
"""

from __future__ import annotations

import binascii
import html
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.header import Header
from email.utils import format_datetime, unquote
from pathlib import Path
from typing import Any

import css_inline
import nh3
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from digest.domain import Article, Frequency

CRLF = "\r\n"
# Every boundary str.splitlines() knows, "\r\n" first so that it counts once (RELIABILITY rule 11).
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_FOLD_POINT = re.compile(r"(?<=\S) ")
_NAME_ADDR = re.compile(r"(.*)<([^<>]*)>\s*")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_BLOCK_END = re.compile(r"</p>|<br>|</li>|</blockquote>")
# Quoted-printable never writes "=_" (a literal "=" becomes "=3D"), so no body line can match it.
_PART = b"Content-Type: text/%s; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
_OPEN = b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="=_digest"\r\n'
_OPEN += b"\r\n--=_digest\r\n" + _PART % b"plain" + b"\r\n"
_MIDDLE = b"\r\n--=_digest\r\n" + _PART % b"html" + b"\r\n"
_CLOSE = b"\r\n--=_digest--\r\n"
# Room kept for each personal link when sizing the shared HTML, so the filled-in part stays under
# max_html_bytes for links up to this many bytes (ours are about 150).
_LINK_ROOM = 400


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    url: str
    sender: str  # the From header value, e.g. "Mia's Feed <digest@example.org>"
    list_id: str  # the List-Id header value, e.g. "Mia's Feed digest <digest.example.org>"


@dataclass(frozen=True, slots=True)
class Links:
    unsubscribe: str
    preferences: str


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
class _Part:
    """A body cut at its personal links: literal pieces, and between them which link goes there."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]  # 0 unsubscribe, 1 preferences; one fewer than pieces
    encoded: tuple[bytes, ...]  # the pieces, quoted-printable
    is_html: bool

    @classmethod
    def cut(cls, body: str, placeholders: tuple[str, str], *, is_html: bool) -> _Part:
        parts = re.split("(" + "|".join(placeholders) + ")", body)
        pieces = tuple(parts[0::2])
        slots = tuple(placeholders.index(p) for p in parts[1::2])
        return cls(pieces, slots, tuple(_qp(p) for p in pieces), is_html)

    def _links(self, links: Links) -> list[str]:
        urls = (links.unsubscribe, links.preferences)
        return [html.escape(urls[s]) if self.is_html else urls[s] for s in self.slots]

    def fill(self, links: Links) -> str:
        out = [self.pieces[0]]
        for url, piece in zip(self._links(links), self.pieces[1:], strict=True):
            out += (url, piece)
        return "".join(out)

    def encode(self, links: Links) -> bytes:
        out = [self.encoded[0]]
        for url, piece in zip(self._links(links), self.encoded[1:], strict=True):
            out += (_qp(url), piece)
        # Soft line breaks join the pieces, so each piece is encoded once, not per subscriber.
        return b"=\r\n".join(out)


@dataclass(frozen=True, slots=True)
class DigestBody:
    """The part of a digest shared by every subscriber with the same window."""

    subject: str
    frequency: Frequency
    shown: int  # articles in the mail
    total: int  # articles in the window; the rest are "N more on the site"
    subject_header: bytes
    html: _Part
    text: _Part


def preview_html(body: DigestBody, links: Links) -> str:
    return body.html.fill(links)


def preview_text(body: DigestBody, links: Links) -> str:
    return body.text.fill(links)


class Renderer:
    def __init__(
        self,
        templates_dir: Path,
        site: Site,
        *,
        max_articles: int = 20,
        max_html_bytes: int = 102_000,
    ) -> None:
        self.site = site
        self.max_articles = max_articles
        self.max_html_bytes = max_html_bytes
        self._env = Environment(
            loader=FileSystemLoader(templates_dir),
            # select_autoescape()'s default matches ".html" only, not our ".html.j2".
            autoescape=select_autoescape(enabled_extensions=("html", "html.j2")),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self._inliner = css_inline.CSSInliner(keep_at_rules=True, load_remote_stylesheets=False)
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
        self._from = f"From: {_mailbox(site.sender)}".encode()
        self._list_id = f"List-Id: {_mailbox(site.list_id)}".encode()

    def digest_body(self, frequency: Frequency, articles: Sequence[Article]) -> DigestBody:
        items = [self._item(a) for a in articles[: self.max_articles]]
        rendered: dict[int, str] = {}

        def fits(count: int) -> bool:
            rendered[count] = self._digest_html(frequency, items[:count], len(articles))
            return self._html_size(rendered[count]) < self.max_html_bytes

        shown = len(items)
        if not fits(shown):
            # Size grows with the count, so bisect for the longest prefix that fits (about five
            # renders instead of up to twenty). If none fits, the mail still says "N more".
            low, high = 0, shown - 1
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if fits(middle) else (low, middle - 1)
            shown = low
        if shown not in rendered:
            fits(shown)
        context = self._digest_context(frequency, items[:shown], len(articles))
        text_body = self._env.get_template("email/digest.txt.j2").render(context)
        return DigestBody(
            subject=context["subject"],
            frequency=frequency,
            shown=shown,
            total=len(articles),
            subject_header=_unstructured("Subject", context["subject"]),
            html=_Part.cut(rendered[shown], self._placeholders, is_html=True),
            text=_Part.cut(text_body, self._placeholders, is_html=False),
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
            _structured("To", recipient),
            body.subject_header,
            _structured("Date", format_datetime(date)),
            _structured("Message-ID", message_id),
            self._list_id,
            _structured("List-Unsubscribe", f"<{links.unsubscribe}>"),
        ]
        if one_click:
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        return _assemble(headers, body.text.encode(links), body.html.encode(links))

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
            _structured("To", recipient),
            _unstructured("Subject", subject),
            _structured("Date", format_datetime(date)),
            _structured("Message-ID", message_id),
        ]
        return _assemble(headers, _qp(text_body), _qp(html_body))

    def _item(self, article: Article) -> _Item:
        url = _one_line(article.url).strip()
        if not url.lower().startswith(("https://", "http://")):
            url = self.site.url
        summary = self._summary_html.clean(article.summary)
        # Block ends become line breaks before the tags go, or paragraphs would run together.
        text = html.unescape(self._summary_text.clean(_BLOCK_END.sub("\n", summary)))
        paragraphs = (" ".join(line.split()) for line in text.splitlines())
        return _Item(
            title=_one_line(article.title).strip() or url,
            url=url,
            category=_one_line(article.category).strip() or "Other news",
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

    def _html_size(self, body: str) -> int:
        links = sum(body.count(p) for p in self._placeholders)
        return len(body.encode()) + links * (_LINK_ROOM - len(self._placeholders[0]))


def _one_line(value: str) -> str:
    return _LINE_BREAK.sub(" ", value)


def _is_plain(value: str) -> bool:
    """Printable ASCII that no reader would take for an RFC 2047 encoded word."""
    return value.isascii() and value.isprintable() and "=?" not in value


def _fold(line: str, limit: int = 78) -> str:
    """Fold before spaces that follow a word, so lines stay under the limit where words allow."""
    lines = []
    start = line.index(":") + 2  # never fold between the name and the first word
    while len(line) > limit:
        cuts = [m.start() for m in _FOLD_POINT.finditer(line, start)]
        if not cuts:
            break
        fitting = [cut for cut in cuts if cut <= limit]
        cut = fitting[-1] if fitting else cuts[0]
        lines.append(line[:cut])
        line, start = line[cut:], 1
    lines.append(line)
    return CRLF.join(lines)


def _unstructured(name: str, value: str) -> bytes:
    value = _one_line(value)
    if _is_plain(value):
        return _fold(f"{name}: {value}").encode("ascii")
    encoded = Header(value, "utf-8", header_name=name).encode(linesep=CRLF)
    return f"{name}: {encoded}".encode("ascii")


def _structured(name: str, value: str) -> bytes:
    # Addresses, ids, dates and URLs: ASCII except an SMTPUTF8 address, which goes as UTF-8.
    return f"{name}: {_one_line(value).strip()}".encode()


def _mailbox(value: str) -> str:
    """`Name <addr>` with the name quoted or RFC 2047-encoded as it needs."""
    value = _one_line(value).strip()
    match = _NAME_ADDR.fullmatch(value)
    if match is None:
        return value
    name, address = unquote(match[1].strip()), match[2].strip()
    if not name:
        return f"<{address}>"
    if not _is_plain(name):
        name = Header(name, "utf-8").encode(linesep=CRLF)
    elif _SPECIALS.search(name):
        name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{name} <{address}>"


def _qp(text: str) -> bytes:
    """Quoted-printable with CRLF line ends, and room left on the last line for a soft break."""
    data = _LINE_BREAK.sub(CRLF, text).encode()
    encoded = binascii.b2a_qp(data, istext=True).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start > 75:
        cut = start + 72
        if encoded[cut - 1] == ord("="):  # never split an =XX escape
            cut -= 1
        elif encoded[cut - 2] == ord("="):
            cut -= 2
        encoded = encoded[:cut] + b"=\r\n" + encoded[cut:]
    return encoded


def _assemble(headers: list[bytes], text: bytes, html_body: bytes) -> bytes:
    return b"".join((b"\r\n".join(headers), b"\r\n", _OPEN, text, _MIDDLE, html_body, _CLOSE))
