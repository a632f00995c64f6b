"""Digest and confirmation mails, from templates to the bytes SMTP sends (through mime.py).

The expensive work (Jinja, sanitising, CSS inlining, transfer encoding) happens once per distinct
window and edition in `digest_body`; `digest_message` runs once per subscriber, so it only encodes
three links and joins pre-encoded bytes (DESIGN §4: `EmailMessage` costs more than half of a naive
send). The size cap on the HTML part counts its bytes as sent (Gmail clips the HTML past about
102 KB, hiding the unsubscribe link in the footer), with room for the longest personal links.

A digest opens with its lead story (the newest editor's pick, else the newest article), then the
other picks before the rest: the cap and max_articles keep a prefix, so the picks are what stays.
"""

from __future__ import annotations

import re
import secrets
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import css_inline
import nh3
from inscriptis import get_text
from inscriptis.css_profiles import STRICT_CSS_PROFILE
from inscriptis.html_properties import Display
from inscriptis.model.config import ParserConfig
from inscriptis.model.html_element import HtmlElement
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from digest.config import origin_of
from digest.domain import SUBJECTS, Article, Frequency, Site, day_and_month, edition
from digest.mime import Part, assemble, mailbox, one_line, structured, unstructured
from digest.text import is_web_url

# Room kept for each personal link (HTML-escaped UTF-8, line breaks as CRLF) when sizing the shared
# HTML, so the part as sent stays under max_html_bytes for any links up to this many bytes. Ours are
# the base URL, "/preferences/" and a token of at most 100 characters: about 150 bytes.
LINK_ROOM = 400
TEXT_WIDTH = 72  # of the text part's lines, where words allow


def _block(indent: int) -> HtmlElement:
    # A blank line before, none after: inscriptis gives a block's children the blank line its
    # parent keeps after itself, which would put one between every two list items. The element
    # after a list or a quote has a blank line before it of its own.
    return HtmlElement(display=Display.block, margin_before=1, padding_inline=indent)


# Summaries in the text part: links written out as "[words](url)", lists and quotes indented and
# set apart (Firefox's defaults, which inscriptis follows, set no blank line around them).
_AS_TEXT = ParserConfig(
    css={**STRICT_CSS_PROFILE, "ul": _block(4), "ol": _block(4), "blockquote": _block(4)},
    display_links=True,
)
_BULLET = re.compile(r"( *)([*+o-] |[0-9]+\. )?")  # inscriptis marks nested lists * + o -
# A start tag as css-inline writes it: every value in double quotes, a '"' inside written &quot;,
# a "<" in text written &lt;, so the first raw "<" of a match is where a tag starts.
_START_TAG = re.compile(r'<[a-zA-Z][^\s/>]*(?:\s+[^\s"=<>/]+(?:="[^"]*")?)*\s*/?>')
_QUOTED = re.compile(r'="[^"]*"')


@dataclass(frozen=True, slots=True)
class Links:
    unsubscribe: str
    preferences: str
    web_version: str | None = None  # the digest's own page; none for a preview, or on that page
    mailto: str | None = None  # List-Unsubscribe's mailto: form, where inbound mail is set up

    @property
    def urls(self) -> tuple[str, str, str]:
        """In the order of Renderer's placeholders."""
        return (self.unsubscribe, self.preferences, self.web_version or "")


@dataclass(frozen=True, slots=True)
class _Item:
    """An article as both templates show it: one-line title, safe links, sanitised summary."""

    title: str
    url: str
    category: str
    minutes: int
    published: str  # "25 November", its day in UTC: the body is shared across timezones
    picture: str | None  # an https URL, exactly as stored
    featured: bool
    summary_html: Markup
    summary_text: str  # wrapped, links written out


@dataclass(frozen=True, slots=True)
class DigestBody:
    """The part of a digest shared by every subscriber with the same window and edition."""

    subject: str
    frequency: Frequency
    edition: str  # "23–29 November"
    shown: int  # articles in the mail
    total: int  # articles in the window; the rest are "N more on the site"
    links_web_version: bool  # whether the mail links its web version, so needs that link
    subject_header: bytes
    feedback_id_header: bytes  # Gmail's feedback loop: edition, frequency, the list, the sender
    html: Part
    text: Part

    def urls(self, links: Links) -> tuple[str, str, str]:
        if self.links_web_version and links.web_version is None:
            raise ValueError("this digest links its web version: Links.web_version is needed")
        return links.urls


def _list_unsubscribe(links: Links) -> str:
    """The https link (RFC 8058's one-click target), then the mailto: form where there is one."""
    https = f"<{links.unsubscribe}>"
    return https if links.mailto is None else f"{https}, <{links.mailto}>"


def preview_html(body: DigestBody, links: Links) -> str:
    return body.html.fill(body.urls(links))


def preview_text(body: DigestBody, links: Links) -> str:
    return body.text.fill(body.urls(links))


def _in_order(articles: Sequence[Article]) -> list[Article]:
    """The lead story, then the other editor's picks, then the rest; each newest first as given.

    The lead is the newest pick, or the newest article when there is no pick.
    """
    return [a for a in articles if a.featured] + [a for a in articles if not a.featured]


class Renderer:
    def __init__(
        self,
        templates_dir: Path,
        site: Site,
        *,
        subjects: Mapping[Frequency, str] = SUBJECTS,
        max_articles: int = 20,
        max_html_bytes: int = 102_000,
        link_room: int = LINK_ROOM,
    ) -> None:
        self.site = site
        self.subjects = subjects  # "Your weekly digest · {edition}": {edition} and {site}
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
        # Unguessable, so no article text can pose as a personal link.
        nonce = secrets.token_hex(16)
        self._placeholders = (f"unsubscribe{nonce}", f"preferences{nonce}", f"webversion{nonce}")
        self._from = f"From: {mailbox(site.sender)}".encode()
        self._list_id = f"List-Id: {mailbox(site.list_id)}".encode()
        # Feedback-ID's last field names the sender: the List-Id's address, one per site.
        self._feedback_sender = site.list_id.rpartition("<")[2].rstrip(">").strip()

    def digest_body(
        self,
        frequency: Frequency,
        articles: Sequence[Article],
        period_key: str,
        *,
        web_version: bool = True,
    ) -> DigestBody:
        """The mail every reader of this window and edition gets, but for their links.

        period_key names the edition (domain.period_key, in the reader's own timezone);
        web_version=False leaves out the "View in browser" links, for a preview or for the web
        version itself.
        """
        words = edition(frequency, period_key)
        subject = self.subjects[frequency].format(edition=words, site=self.site.name)
        frame = {
            "site": self.site,
            "frequency": frequency.value,
            "subject": one_line(subject).strip(),
            "total": len(articles),
            "unsubscribe_url": self._placeholders[0],
            "preferences_url": self._placeholders[1],
            "web_version_url": self._placeholders[2] if web_version else "",
        }
        items = [self._item(a) for a in _in_order(articles)[: self.max_articles]]
        encoded: dict[int, Part] = {}

        def fits(count: int) -> bool:
            html_body = self._digest_html(frame, items[:count])
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
            encoded[shown] = self._part(self._digest_html(frame, []), is_html=True)
        context = _digest_context(frame, items[:shown])
        text_body = self._env.get_template("email/digest.txt.j2").render(context)
        return DigestBody(
            subject=context["subject"],
            frequency=frequency,
            edition=words,
            shown=shown,
            total=len(articles),
            links_web_version=web_version,
            subject_header=unstructured("Subject", context["subject"]),
            feedback_id_header=structured(
                "Feedback-ID", f"{period_key}:{frequency.value}:digest:{self._feedback_sender}"
            ),
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
            structured("List-Unsubscribe", _list_unsubscribe(links)),
            body.feedback_id_header,
        ]
        if one_click:
            headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        urls = body.urls(links)
        return assemble(headers, body.text.encode(urls), body.html.encode(urls))

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
        # Deliberately no List-Unsubscribe: nobody is subscribed yet (RELIABILITY rule 3).
        return self._short_mail("confirm", context, recipient, message_id=message_id, date=date)

    def _may_show(self, picture: str) -> bool:
        """The rule of import: an https picture, or one on the site's own origin (the demo's)."""
        secure = picture[:8].lower() == "https://"
        return is_web_url(picture) and (secure or origin_of(picture) == origin_of(self.site.url))

    def _item(self, article: Article) -> _Item:
        url = one_line(article.url).strip()
        if not url.lower().startswith(("https://", "http://")):
            url = self.site.url
        picture = article.image_url
        if picture is not None and not self._may_show(picture):
            picture = None  # import checked it; again here, where it becomes markup
        summary = self._summary_html.clean(article.summary)
        return _Item(
            title=one_line(article.title).strip() or url,
            url=url,
            category=one_line(article.category).strip() or "Other news",
            minutes=max(article.reading_minutes, 1),
            published=day_and_month(article.published_at.date()),
            picture=picture,
            featured=article.featured,
            summary_html=Markup(summary),  # noqa: S704 -- nh3 has just cleaned it
            summary_text=_as_text(summary),
        )

    def _digest_html(self, frame: dict[str, Any], items: list[_Item]) -> str:
        html = self._env.get_template("email/digest.html.j2").render(_digest_context(frame, items))
        return self._inline(html)

    def _inline(self, html: str) -> str:
        """CSS inlined, and every "<" and ">" inside an attribute written as a reference again.

        css-inline writes a title's "<" in alt="..." as it is (HTML allows it in a quoted value);
        escaped, no text from an article reaches the mail as a raw "<", which nothing can read
        as a tag, however it parses.
        """
        return _START_TAG.sub(_escape_values, self._inliner.inline(html))

    def _part(self, body: str, *, is_html: bool) -> Part:
        return Part.cut(body, self._placeholders, is_html=is_html, link_room=self.link_room)

    def welcome_message(
        self,
        recipient: str,
        frequency: Frequency,
        rhythm: str,
        first_digest: str,
        *,
        topics: str | None,
        unsubscribe_url: str,
        preferences_url: str,
        message_id: str,
        date: datetime,
        one_click: bool,
    ) -> bytes:
        """The one welcome after confirming: rhythm says when digests come ("every Monday at
        08:00, Madrid (Spain) time"), first_digest ends "Your first digest ...", and topics names
        the reader's ("Nutrition and Sleep"; None: every topic)."""
        subject = f"Welcome to the {frequency.value} digest from {self.site.name}"
        context = {
            "site": self.site,
            "subject": subject,
            "frequency": frequency.value,
            "rhythm": rhythm,
            "first_digest": first_digest,
            "topics": topics,
            "unsubscribe_url": unsubscribe_url,
            "preferences_url": preferences_url,
        }
        # The reader is subscribed now: List-Unsubscribe as on every digest (RFC 8058).
        return self._short_mail(
            "welcome",
            context,
            recipient,
            message_id=message_id,
            date=date,
            unsubscribe=(unsubscribe_url, one_click),
        )

    def _short_mail(
        self,
        template: str,
        context: dict[str, Any],
        recipient: str,
        *,
        message_id: str,
        date: datetime,
        unsubscribe: tuple[str, bool] | None = None,
    ) -> bytes:
        """A mail to one reader, without shared parts: email/{template}.html.j2 and .txt.j2.

        unsubscribe is (the reader's unsubscribe URL, whether it takes a one-click POST)."""
        html_body = self._inline(
            self._env.get_template(f"email/{template}.html.j2").render(context)
        )
        text_body = self._env.get_template(f"email/{template}.txt.j2").render(context)
        headers = [
            self._from,
            structured("To", recipient),
            unstructured("Subject", context["subject"]),
            structured("Date", format_datetime(date)),
            structured("Message-ID", message_id),
        ]
        if unsubscribe is not None:
            url, one_click = unsubscribe
            headers += [self._list_id, structured("List-Unsubscribe", f"<{url}>")]
            if one_click:
                headers.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        text_part = Part.cut(text_body, (), is_html=False, link_room=0)
        html_part = Part.cut(html_body, (), is_html=True, link_room=0)
        return assemble(headers, text_part.encode(), html_part.encode())


def _digest_context(frame: dict[str, Any], items: list[_Item]) -> dict[str, Any]:
    """What both templates show of these items (the lead first) out of a window of total."""
    total = frame["total"]
    groups: dict[str, list[_Item]] = {}
    for item in items[1:]:  # picks first, so categories come in order of their first pick
        groups.setdefault(item.category, []).append(item)
    minutes = sum(item.minutes for item in items)
    count = f"{total} new article{'' if total == 1 else 's'}"
    shown = "" if len(items) == total else f" · {len(items)} below"
    return {
        **frame,
        "overview": f"{count}{shown} · {minutes} min read",
        "preheader": f"{items[0].title} · {count}" if items else count,
        "lead": items[0] if items else None,
        "groups": list(groups.items()),
        "thumbnails": any(item.picture for item in items[1:]),
        "more": total - len(items),
    }


def _escape_values(tag: re.Match[str]) -> str:
    return _QUOTED.sub(lambda value: value[0].replace("<", "&lt;").replace(">", "&gt;"), tag[0])


def _as_text(summary: str) -> str:
    """A sanitised summary as text: paragraphs apart, links written out, lines wrapped."""
    lines = [line.rstrip() for line in get_text(summary, _AS_TEXT).splitlines()]
    paragraphs = "\n".join(_wrap(line) for line in lines).split("\n\n")
    return "\n\n".join(p.strip("\n") for p in paragraphs if p.strip())


def _wrap(line: str) -> str:
    """A line wrapped at TEXT_WIDTH where words allow, a list item's lines under its text."""
    lead = _BULLET.match(line)
    assert lead is not None  # the pattern matches the empty string
    return textwrap.fill(
        line[lead.end() :],
        width=TEXT_WIDTH,
        initial_indent=lead[0],
        subsequent_indent=" " * lead.end(),
        break_long_words=False,
        break_on_hyphens=False,
    )
