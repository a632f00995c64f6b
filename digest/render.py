"""Digest and confirmation mails, from templates to the bytes SMTP sends.

The expensive work (Jinja, sanitising, CSS inlining, transfer encoding) happens once per distinct
window in `digest_body`; `digest_message` runs once per subscriber, so it only encodes two links and
joins pre-encoded bytes (DESIGN §4: `EmailMessage` costs more than half of a naive send).

Each part goes as quoted-printable or base64, whichever is smaller for that body: quoted-printable
for mostly-ASCII text, base64 (a flat 4/3) where quoted-printable would triple non-ASCII text. The
size cap on the HTML part counts its bytes as sent (Gmail clips the HTML past about 102 KB, hiding the
unsubscribe link in the footer), with room for the longest personal links.
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

from digest.domain import Article, Frequency, Site

CRLF = "\r\n"
# Every boundary str.splitlines() knows, "\r\n" first so that it counts once (RELIABILITY rule 11).
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")
_FOLD_POINT = re.compile(r"(?<=\S) ")
_NAME_ADDR = re.compile(r"(.*)<([^<>]*)>\s*")
_SPECIALS = re.compile(r'[][\\()<>@,:;".]')
_BLOCK_END = re.compile(r"</p>|<br>|</li>|</blockquote>")
# No body line can match the boundary: quoted-printable never writes "=_" (a literal "=" becomes
# "=3D"), and base64 has no "-".
_OPEN = b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="=_digest"\r\n'
_PART = b"\r\n--=_digest\r\nContent-Type: text/%s; charset=utf-8\r\n"
_PART += b"Content-Transfer-Encoding: %s\r\n\r\n"
_CLOSE = b"\r\n--=_digest--\r\n"
_SOFT_BREAK = b"=\r\n"
# Room kept for each personal link (HTML-escaped UTF-8, line breaks as CRLF) when sizing the shared
# HTML, so the part as sent stays under max_html_bytes for any links up to this many bytes. Ours are
# the base URL, "/preferences/" and a token of at most 100 characters: about 150 bytes.
LINK_ROOM = 400


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


class _QuotedPrintable:
    """Each piece encoded once; a subscriber's links are encoded alone and joined by soft breaks."""

    name = b"quoted-printable"

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._pieces = tuple(_qp(piece) for piece in pieces)

    def largest(self, link_room: int) -> int:
        # A link byte takes at most three ("=3D"); the encoder breaks a line before column 73 at
        # the earliest, _qp may add one break at the end, and two more join the link to its pieces.
        link = 3 * link_room + len(_SOFT_BREAK) * (3 * link_room // 73 + 4)
        return sum(map(len, self._pieces)) + (len(self._pieces) - 1) * link

    def join(self, links: Sequence[bytes]) -> bytes:
        out = [self._pieces[0]]
        for link, piece in zip(links, self._pieces[1:], strict=True):
            out += (_qp(link), piece)
        return _SOFT_BREAK.join(out)


@dataclass(frozen=True, slots=True)
class _Aligned:
    """A piece with its first `skip` bytes gone: base64 of its whole groups of three, and the rest."""

    encoded: bytes
    tail: bytes

    @classmethod
    def of(cls, data: bytes, skip: int = 0) -> _Aligned:
        end = skip + (len(data) - skip) // 3 * 3
        return cls(_b64(data[skip:end]), data[end:])


class _Base64:
    """Each piece encoded once, in whole groups of three bytes, for each way it can start.

    A subscriber's link, with the bytes left over before it and the 0-2 bytes after it that make
    whole groups, is the only thing encoded per subscriber; only the last group may be padded.
    """

    name = b"base64"

    def __init__(self, pieces: Sequence[bytes]) -> None:
        self._first = _Aligned.of(pieces[0])
        self._rest = tuple(
            (piece, tuple(_Aligned.of(piece, skip) for skip in range(3))) for piece in pieces[1:]
        )

    @staticmethod
    def largest(pieces: Sequence[bytes], link_room: int) -> int:
        # Dropping bytes from a piece's start never lengthens it; a link's own line takes up to
        # two bytes left over before it and two after; the end may carry two left over.
        whole = sum(_b64_size(len(piece) // 3 * 3) for piece in pieces)
        return whole + (len(pieces) - 1) * _b64_size(link_room + 4) + _b64_size(2)

    def join(self, links: Sequence[bytes]) -> bytes:
        out, carry = [self._first.encoded], self._first.tail
        for link, (piece, starts) in zip(links, self._rest, strict=True):
            carry += link
            need = -len(carry) % 3
            if len(piece) < need:  # too short to make whole groups: it goes with the next link
                carry += piece
                continue
            start = starts[need]
            out += (_b64(carry + piece[:need]), start.encoded)
            carry = start.tail
        out.append(_b64(carry))
        return b"".join(out)


@dataclass(frozen=True, slots=True)
class _Part:
    """A body cut at its personal links: literal pieces, and between them which link goes there."""

    pieces: tuple[str, ...]
    slots: tuple[int, ...]  # 0 unsubscribe, 1 preferences; one fewer than pieces
    is_html: bool
    encoding: _QuotedPrintable | _Base64
    largest: int  # bytes of the body as sent, at most, with links up to the room kept
    head: bytes  # the boundary and the part's headers

    @classmethod
    def cut(
        cls, body: str, placeholders: tuple[str, ...], *, is_html: bool, link_room: int
    ) -> _Part:
        parts = re.split("(" + "|".join(placeholders) + ")", body) if placeholders else [body]
        pieces = tuple(parts[0::2])
        slots = tuple(placeholders.index(p) for p in parts[1::2])
        data = [_canonical(piece) for piece in pieces]
        quoted = _QuotedPrintable(data)
        largest = quoted.largest(link_room)
        as_base64 = _Base64.largest(data, link_room)
        encoding: _QuotedPrintable | _Base64 = quoted
        if as_base64 < largest:
            encoding, largest = _Base64(data), as_base64
        head = _PART % (b"html" if is_html else b"plain", encoding.name)
        return cls(pieces, slots, is_html, encoding, largest, head)

    def _links(self, links: Links) -> list[str]:
        urls = (links.unsubscribe, links.preferences)
        return [html.escape(urls[s]) if self.is_html else urls[s] for s in self.slots]

    def fill(self, links: Links) -> str:
        out = [self.pieces[0]]
        for url, piece in zip(self._links(links), self.pieces[1:], strict=True):
            out += (url, piece)
        return "".join(out)

    def encode(self, links: Links | None = None) -> tuple[bytes, bytes]:
        """The part as sent: its headers, and its body; a part without personal links needs none."""
        urls = [] if links is None else self._links(links)
        return self.head, self.encoding.join([_canonical(url) for url in urls])


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
        encoded: dict[int, _Part] = {}

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
            subject_header=_unstructured("Subject", context["subject"]),
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
        text_part = _Part.cut(text_body, (), is_html=False, link_room=0)
        html_part = _Part.cut(html_body, (), is_html=True, link_room=0)
        return _assemble(headers, text_part.encode(), html_part.encode())

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

    def _part(self, body: str, *, is_html: bool) -> _Part:
        return _Part.cut(body, self._placeholders, is_html=is_html, link_room=self.link_room)


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


def _canonical(text: str) -> bytes:
    """UTF-8 with CRLF line ends, as both transfer encodings want text."""
    return _LINE_BREAK.sub(CRLF, text).encode()


def _qp(data: bytes) -> bytes:
    """Quoted-printable with CRLF line ends, and room left on the last line for a soft break."""
    encoded = binascii.b2a_qp(data, istext=True)
    if b"\n" not in data:  # with a CRLF in data, b2a_qp ends every line, soft or hard, with CRLF
        encoded = encoded.replace(b"\n", b"\r\n")
    start = encoded.rfind(b"\n") + 1
    if len(encoded) - start > 75:
        cut = start + 72
        if encoded[cut - 1] == ord("="):  # never split an =XX escape
            cut -= 1
        elif encoded[cut - 2] == ord("="):
            cut -= 2
        encoded = encoded[:cut] + b"=\r\n" + encoded[cut:]
    return encoded


def _b64(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ending CRLF; nothing for no data."""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def _b64_size(length: int) -> int:
    characters = -(-length // 3) * 4
    return characters + 2 * -(-characters // 76)


def _assemble(
    headers: list[bytes], text: tuple[bytes, bytes], html_part: tuple[bytes, bytes]
) -> bytes:
    # One join: the bodies are the bulk of the message, so they are copied once, not per step.
    return b"".join((b"\r\n".join(headers), b"\r\n", _OPEN, *text, *html_part, _CLOSE))
