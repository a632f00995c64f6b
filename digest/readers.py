"""What readers do on the web pages: sign up, confirm, unsubscribe, change their preferences, and
read again the digests they were sent.

Every link is checked here against the reader it names (its purpose's signature, the reader's
current token_version and, for a confirm link, the address; for a digest's web version, that the
digest went out), and every failure is the same InvalidToken, so that a page can never tell a
stranger which readers exist.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from digest.addresses import mask_address
from digest.domain import (
    WEEKDAYS,
    Clock,
    Frequency,
    NextDigest,
    Schedule,
    SentDigest,
    Subscriber,
    SubscriberDraft,
    SubscriberStatus,
    pause_end,
)
from digest.errors import InvalidToken
from digest.ledger import Ledger
from digest.mailer import Outgoing, Sender
from digest.render import Renderer
from digest.store import Activation, Signup, Store
from digest.timezones import label
from digest.tokens import Purpose, Tokens, TokenSubject, address_hash

log = logging.getLogger("digest.readers")
NOT_VALID = "this link is not valid"
HISTORY = 10  # the last digests the preferences page lists
# The topics the pages offer: those of the newest articles, so that a dead category drops out.
TOPICS_AMONG = 5_000
OFFERED_TOPICS = 40


@dataclass(frozen=True, slots=True)
class ConfirmationMail:
    """Sends the double opt-in mail: no List-Unsubscribe headers, since nobody is subscribed yet."""

    renderer: Renderer
    tokens: Tokens
    sender: Callable[[], Sender]  # opens the port digests go through, once for each mail
    base_url: str
    envelope_sender: str
    message_domain: str
    expires_days: int

    async def send(self, signup: Signup, draft: SubscriberDraft, now: datetime) -> None:
        # To the address on file, which a sign-up in another case does not change.
        token = self.tokens.confirm_token(
            signup.subscriber_id, signup.token_version, signup.email, now
        )
        message = self.renderer.confirmation_message(
            signup.email,
            f"{self.base_url}/confirm/{token}",
            draft.frequency,
            message_id=f"<confirm.{uuid.uuid4().hex}@{self.message_domain}>",
            date=now,
            expires_days=self.expires_days,
        )
        await _send(self.sender, self.envelope_sender, signup.email, message, "confirmation mail")


@dataclass(frozen=True, slots=True)
class WelcomeMail:
    """Sends the one welcome after a reader confirms: what comes and when, with their links and a
    digest's List-Unsubscribe headers, since they are subscribed now."""

    renderer: Renderer
    tokens: Tokens
    sender: Callable[[], Sender]
    base_url: str
    envelope_sender: str
    message_domain: str
    schedule: Schedule
    one_click: bool

    async def send(
        self, reader: Subscriber, first_digest: str, names: Mapping[str, str], now: datetime
    ) -> None:
        """first_digest ends "Your first digest ...", as the confirmed page says it; names names
        the reader's topics as the pages do (Readers.topics)."""

        def link(purpose: Purpose) -> str:
            return self.base_url + link_path(self.tokens, purpose, reader)

        message = self.renderer.welcome_message(
            reader.email,
            reader.frequency,
            f"{rhythm(reader.frequency, schedule_of(reader, self.schedule))}, "
            f"{label(reader.timezone)} time",
            first_digest,
            topics=None if reader.topics is None else topics_in_words(reader.topics, names),
            unsubscribe_url=link(Purpose.UNSUBSCRIBE),
            preferences_url=link(Purpose.PREFERENCES),
            message_id=f"<welcome.{uuid.uuid4().hex}@{self.message_domain}>",
            date=now,
            one_click=self.one_click,
        )
        # After the answer, as a background task: the reader is active whatever happens here.
        await _send(self.sender, self.envelope_sender, reader.email, message, "welcome mail")


async def _send(
    sender: Callable[[], Sender], envelope_sender: str, recipient: str, message: bytes, what: str
) -> None:
    """Send one mail through the port digests go through, and log one line on how it went."""
    async with sender() as opened:
        (outcome,) = await opened.send_many([Outgoing(0, envelope_sender, recipient, message)])
    if outcome.reply is None:
        log.info("%s sent to %s", what, mask_address(recipient))
    else:
        log.warning("%s to %s not sent: %s", what, mask_address(recipient), outcome.detail)


def rhythm(frequency: Frequency, schedule: Schedule) -> str:
    """When a frequency's digests come, local time: "every Monday at 08:00"."""
    at = f"at {schedule.send_time:%H:%M}"
    if frequency is Frequency.DAILY:
        return f"every day {at}"
    if frequency is Frequency.WEEKLY:
        return f"every {WEEKDAYS[schedule.weekly_day].capitalize()} {at}"
    day = schedule.monthly_day
    return f"on the {_ordinal(day)} of every month{_or_last_day(day)} {at}"


def in_words(frequency: Frequency, schedule: Schedule) -> str:
    """What a reader gets and when, as the preferences page says it: "Weekly, on Sundays at 07:00"."""
    at = f"at {schedule.send_time:%H:%M}"
    if frequency is Frequency.DAILY:
        return f"Daily, {at}"
    if frequency is Frequency.WEEKLY:
        return f"Weekly, on {WEEKDAYS[schedule.weekly_day].capitalize()}s {at}"
    day = schedule.monthly_day
    return f"Monthly, on the {_ordinal(day)}{_or_last_day(day)} {at}"


def topics_in_words(topics: frozenset[str] | None, names: Mapping[str, str]) -> str:
    """A reader's topics as the pages name them: "Nutrition and Public Health", "all topics"."""
    if topics is None:
        return "all topics"
    named = sorted((names.get(key) or key.capitalize() for key in topics), key=str.casefold)
    return " and ".join(named) if len(named) < 3 else f"{', '.join(named[:-1])} and {named[-1]}"


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _or_last_day(day: int) -> str:
    """A monthly slot past the 28th falls on a shorter month's last day."""
    return " (or the month's last day)" if day > 28 else ""


def schedule_of(reader: Subscriber, site: Schedule) -> Schedule:
    """The site's schedule with the reader's own send time and weekday."""
    return site.for_reader(reader.send_time, reader.send_weekday)


def link_path(tokens: Tokens, purpose: Purpose, reader: Subscriber) -> str:
    """The path of one of a reader's pages, e.g. /preferences/{token}."""
    return f"/{purpose.value}/{tokens.link_token(purpose, reader.id, reader.token_version)}"


class Readers:
    def __init__(
        self,
        store: Store,
        ledger: Ledger,
        tokens: Tokens,
        schedule: Schedule,
        max_lateness: timedelta | None,
        clock: Clock,
        web_version: Callable[[SentDigest], str],
    ) -> None:
        """web_version renders a digest that went out (Services.web_version)."""
        self._store = store
        self._ledger = ledger
        self._tokens = tokens
        self._schedule = schedule
        self._max_lateness = max_lateness
        self._clock = clock
        self._web_version = web_version

    def now(self) -> datetime:
        return self._clock()

    def reader(self, purpose: Purpose, token: str, *, expired_ok: bool = False) -> Subscriber:
        """The reader a link belongs to; InvalidToken (ExpiredToken for an old confirm link)."""
        subject = self._tokens.read(purpose, token, self._clock(), expired_ok=expired_ok)
        return _named(subject, self._store.subscriber(subject.subscriber_id))

    def link(self, purpose: Purpose, reader: Subscriber) -> str:
        """The path of another of this reader's pages, e.g. preferences from the unsubscribe page."""
        return link_path(self._tokens, purpose, reader)

    def sign_up(self, draft: SubscriberDraft) -> Signup:
        return self._store.sign_up(draft, self._clock())

    def confirm(self, token: str) -> Activation:
        """Activate the reader; confirming twice is harmless (and `first` only the first time).
        An unsubscribed reader's old confirm link does not bring them back: that takes a new
        sign-up."""
        subject = self._tokens.read(Purpose.CONFIRM, token, self._clock())

        def check(reader: Subscriber) -> None:  # before it is committed: raising undoes it
            if _named(subject, reader).status is not SubscriberStatus.ACTIVE:
                raise InvalidToken(NOT_VALID)

        activation = self._store.activate(
            subject.subscriber_id, subject.token_version, self._clock(), check
        )
        if activation is None:
            raise InvalidToken(NOT_VALID)
        return activation

    def next_digest(self, reader: Subscriber) -> NextDigest | None:
        """When the reader's next digest goes out, as `digest status` and `preview` say it."""
        now = self._clock()
        _, news = self._store.news_for(reader, now)
        return reader.next_digest(now, self._schedule, self._max_lateness, news=news)

    def topics(self) -> dict[str, str]:
        """The topics the pages offer, by key (domain.topic_key) and name, sorted by name."""
        return self._store.topic_names(TOPICS_AMONG, OFFERED_TOPICS)

    def when(self, reader: Subscriber, names: Mapping[str, str]) -> str:
        """What the reader gets and when, in their words, their topics named as in names:
        "Weekly, on Sundays at 07:00, Madrid (Spain) time: Nutrition and Public Health"."""
        at = in_words(reader.frequency, schedule_of(reader, self._schedule))
        return f"{at}, {label(reader.timezone)} time: {topics_in_words(reader.topics, names)}"

    def web_version(self, token: str) -> str:
        """The HTML of the sent digest a link names, while its reader's links are valid."""
        delivery_id, token_version = self._tokens.read_digest(token)
        sent = self._ledger.sent_digest(delivery_id)
        if sent is None or sent.token_version != token_version:
            raise InvalidToken(NOT_VALID)
        return self._web_version(sent)

    def history(self, reader: Subscriber) -> list[tuple[SentDigest, str]]:
        """The reader's last digests sent, newest first, each with the path of its web version."""
        return [(sent, self._path(sent)) for sent in self._ledger.history(reader.id, HISTORY)]

    def _path(self, sent: SentDigest) -> str:
        token = self._tokens.digest_token(sent.delivery_id, sent.token_version)
        return f"/{Purpose.DIGEST.value}/{token}"

    def unsubscribe(self, purpose: Purpose, token: str) -> Subscriber:
        """From the unsubscribe link or from the preferences page: either link may stop the mail."""
        subject = self._tokens.read(purpose, token, self._clock())
        changed = self._store.unsubscribe(
            subject.subscriber_id, subject.token_version, self._clock()
        )
        return _named(subject, changed)

    def pause(self, purpose: Purpose, token: str, *, months: int, weeks: int) -> Subscriber:
        """Pause the reader's digests that long, to their own midnight (domain.pause_end), from
        the unsubscribe link or the preferences page; a stopped reader comes back unchanged."""
        subject = self._tokens.read(purpose, token, self._clock())
        reader = _named(subject, self._store.subscriber(subject.subscriber_id))
        until = pause_end(self._clock(), ZoneInfo(reader.timezone), months=months, weeks=weeks)
        changed = self._store.pause(subject.subscriber_id, subject.token_version, until)
        return _named(subject, changed)

    def resume(self, token: str) -> Subscriber:
        """End the reader's pause: their next slot brings what they missed."""
        subject = self._tokens.read(Purpose.PREFERENCES, token, self._clock())
        changed = self._store.pause(subject.subscriber_id, subject.token_version, None)
        return _named(subject, changed)

    def set_preferences(
        self,
        token: str,
        frequency: Frequency,
        timezone: str,
        send_time: time | None,
        send_weekday: int | None,
        topics: frozenset[str] | None,
    ) -> Subscriber:
        """Save the choices of a reader who is signed up (a send time or weekday of None is the
        site's, topics of None every topic); a stopped one comes back unchanged."""
        subject = self._tokens.read(Purpose.PREFERENCES, token, self._clock())
        changed = self._store.set_preferences(
            subject.subscriber_id,
            subject.token_version,
            frequency,
            timezone,
            send_time=send_time,
            send_weekday=send_weekday,
            topics=topics,
        )
        return _named(subject, changed)


def _named(subject: TokenSubject, reader: Subscriber | None) -> Subscriber:
    """The reader, if it is the one the link names (its token_version and, for a confirm link, its
    address); InvalidToken for any other, or for none."""
    if reader is None or reader.token_version != subject.token_version:
        raise InvalidToken(NOT_VALID)
    if subject.address_hash is not None and address_hash(reader.email) != subject.address_hash:
        raise InvalidToken(NOT_VALID)
    return reader
