"""The pure core: frequencies, slots and period keys, due-ness, retry delays and SMTP reply classes,
and the nouns every floor above shares (Subscriber, Claim, Run, Site, Clock, Progress...).

No I/O and no clock: every instant is a parameter, every instant is timezone-aware. It imports
nothing of ours, so any module may import it.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Protocol
from zoneinfo import ZoneInfo

# What reads the time: the real clock in production, an injected one in tests and for --now.
Clock = Callable[[], datetime]


class Frequency(StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"  # marked a digest as spam: unsubscribed, and never re-added by import


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"


class NoticeKind(StrEnum):
    """What a mail that came back, or a provider's call, says happened to a digest."""

    BOUNCE = "bounce"  # a permanent failure (5.x.x): counts as a refusal in the session does
    DELAY = "delay"  # a transient one (4.x.x): recorded, and nothing changes
    COMPLAINT = "complaint"  # the reader reported it as spam: they are unsubscribed at once
    UNSUBSCRIBE = "unsubscribe"  # a mail to the mailto: List-Unsubscribe address


@dataclass(frozen=True, slots=True)
class Notice:
    """One thing a bounce, a complaint, a mailto unsubscribe or a provider's webhook reports. It
    names its digest or reader by the first it has of: the delivery its VERP return path signs,
    the reader its mailto address signs, the original Message-ID, the recipient's address."""

    kind: NoticeKind
    source: str  # where it came from: "smtp", "file", "ses", "postmark", "mailgun", "sendgrid"
    delivery_id: int | None = None
    reader: tuple[int, int] | None = None  # (subscriber id, token_version)
    message_id: str | None = None  # as in the header, with its angle brackets
    email: str | None = None
    detail: str = ""  # one line: the status code and what the receiver said


# Over these, a list is in trouble: Gmail and Yahoo throttle bulk senders whose spam rate passes
# 0.3 % (their 2024 rules), so warn well before; a bounce rate over 2 % means a stale list.
COMPLAINT_RATE_LIMIT = 0.001
BOUNCE_RATE_LIMIT = 0.02
FEEDBACK_DAYS = 7


@dataclass(frozen=True, slots=True)
class Feedback:
    """What came back over the last FEEDBACK_DAYS days, against the digests sent in them."""

    sent: int
    counts: dict[NoticeKind, int]

    def rate(self, kind: NoticeKind) -> float:
        return self.counts.get(kind, 0) / self.sent if self.sent else 0.0

    def warnings(self) -> list[str]:
        """One line for each rate over its limit."""
        limits = {NoticeKind.COMPLAINT: COMPLAINT_RATE_LIMIT, NoticeKind.BOUNCE: BOUNCE_RATE_LIMIT}
        return [
            f"the {kind.value} rate, {self.rate(kind):.2%}, is over {limit:.1%}"
            + (
                " (Gmail and Yahoo throttle senders over 0.3 %)"
                if kind is NoticeKind.COMPLAINT
                else " (the list holds addresses that no longer exist)"
            )
            for kind, limit in limits.items()
            if self.rate(kind) > limit
        ]


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# The site's words for dates, fixed here rather than taken from the process's locale.
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# The subject (and the masthead) of each frequency's digest: {edition} names the period in the
# reader's own timezone, {site} is the site's name. The settings' defaults.
SUBJECTS = {
    Frequency.DAILY: "Your daily digest · {edition}",
    Frequency.WEEKLY: "Your weekly digest · {edition}",
    Frequency.MONTHLY: "Your monthly digest · {edition}",
}


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each frequency's slot falls, in the subscriber's own timezone."""

    send_time: time = time(8, 0)
    weekly_day: int = 0  # Monday, as date.weekday() counts
    monthly_day: int = 1  # past the month's end means its last day

    def for_reader(self, send_time: time | None, send_weekday: int | None) -> Schedule:
        """This schedule with a reader's own send time and weekday where they chose one."""
        return replace(
            self,
            send_time=self.send_time if send_time is None else send_time,
            weekly_day=self.weekly_day if send_weekday is None else send_weekday,
        )


@dataclass(frozen=True, slots=True)
class ReaderGroup:
    """Readers who share their slots: one frequency, timezone and choice of time and weekday
    (None: the site's). Planning and the outlook work per group, never per reader."""

    frequency: Frequency
    timezone: str
    send_time: time | None = None
    send_weekday: int | None = None

    def schedule(self, site: Schedule) -> Schedule:
        return site.for_reader(self.send_time, self.send_weekday)


@dataclass(frozen=True, slots=True)
class Slot:
    frequency: Frequency
    at: datetime  # UTC
    key: str  # names the period: 2026-11-24, 2026-W48, 2026-11


# What period_key makes, read back by edition (month 00 and week 54 are left to date's checks).
_PERIOD_KEYS = {
    Frequency.DAILY: re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})"),
    Frequency.WEEKLY: re.compile(r"([0-9]{4})-W([0-9]{2})"),
    Frequency.MONTHLY: re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])"),
}


def period_key(frequency: Frequency, local_day: date) -> str:
    if frequency is Frequency.DAILY:
        return local_day.isoformat()
    if frequency is Frequency.WEEKLY:
        iso = local_day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    return f"{local_day.year}-{local_day.month:02d}"


def period_frequency(key: str) -> Frequency:
    """The frequency whose period a key (as period_key writes it) names."""
    if "-W" in key:
        return Frequency.WEEKLY
    return Frequency.DAILY if key.count("-") == 2 else Frequency.MONTHLY


def day_and_month(day: date) -> str:
    """A date as the mails write it: "25 November"."""
    return f"{day.day} {MONTHS[day.month - 1]}"


def edition(frequency: Frequency, key: str) -> str:
    """The words that name a period_key's edition: "Wednesday 25 November", "23–29 November"
    (an ISO week, Monday to Sunday; the months or years named once they differ), "November 2026".

    ValueError for a key that period_key does not make.
    """
    match = _PERIOD_KEYS[frequency].fullmatch(key)
    if match is None:
        raise ValueError(f"not a {frequency} period key: {key!r}")
    year, number = int(match[1]), int(match[2])
    if frequency is Frequency.DAILY:
        day = date(year, number, int(match[3]))
        return f"{WEEKDAYS[day.weekday()].capitalize()} {day_and_month(day)}"
    if frequency is Frequency.MONTHLY:
        return f"{MONTHS[number - 1]} {year}"
    monday = date.fromisocalendar(year, number, 1)
    sunday = monday + timedelta(days=6)
    if monday.year != sunday.year:
        return f"{day_and_month(monday)} {monday.year} – {day_and_month(sunday)} {sunday.year}"
    if monday.month != sunday.month:
        return f"{day_and_month(monday)} – {day_and_month(sunday)}"
    return f"{monday.day}–{day_and_month(sunday)}"


def _slot_day(frequency: Frequency, schedule: Schedule, local_day: date) -> date:
    """The day of the slot in the period that contains local_day."""
    if frequency is Frequency.DAILY:
        return local_day
    if frequency is Frequency.WEEKLY:
        return local_day + timedelta(days=schedule.weekly_day - local_day.weekday())
    last_day = calendar.monthrange(local_day.year, local_day.month)[1]
    return local_day.replace(day=min(schedule.monthly_day, last_day))


def _shift_period(frequency: Frequency, local_day: date, periods: int) -> date:
    """A day inside the period `periods` away from the one containing local_day."""
    if frequency is Frequency.DAILY:
        return local_day + timedelta(days=periods)
    if frequency is Frequency.WEEKLY:
        return local_day + timedelta(weeks=periods)
    month_index = local_day.year * 12 + local_day.month - 1 + periods
    return date(month_index // 12, month_index % 12 + 1, 1)


def _slot_of_period(
    frequency: Frequency, schedule: Schedule, tz: ZoneInfo, local_day: date
) -> Slot:
    day = _slot_day(frequency, schedule, local_day)
    # A send time inside a DST gap resolves forward (fold=0), so slots stay in order.
    local = datetime.combine(day, schedule.send_time, tzinfo=tz)
    return Slot(frequency, local.astimezone(UTC), period_key(frequency, day))


def latest_slot(frequency: Frequency, schedule: Schedule, tz: ZoneInfo, now: datetime) -> Slot:
    """The latest slot at or before now."""
    local_day = now.astimezone(tz).date()
    slot = _slot_of_period(frequency, schedule, tz, local_day)
    if slot.at > now:
        slot = _slot_of_period(frequency, schedule, tz, _shift_period(frequency, local_day, -1))
    return slot


def next_slot(frequency: Frequency, schedule: Schedule, tz: ZoneInfo, now: datetime) -> Slot:
    """The first slot strictly after now."""
    local_day = now.astimezone(tz).date()
    slot = _slot_of_period(frequency, schedule, tz, local_day)
    if slot.at <= now:
        slot = _slot_of_period(frequency, schedule, tz, _shift_period(frequency, local_day, 1))
    return slot


def is_late(slot: Slot, now: datetime, max_lateness: timedelta | None) -> bool:
    """Whether a slot is too old to be caught up; None means one period, which never is."""
    return max_lateness is not None and now - slot.at > max_lateness


def sendable_slot(
    frequency: Frequency,
    schedule: Schedule,
    tz: ZoneInfo,
    now: datetime,
    max_lateness: timedelta | None = None,
) -> Slot | None:
    """The slot a run at now sends: the latest at or before now, unless too late to catch up."""
    slot = latest_slot(frequency, schedule, tz, now)
    return None if is_late(slot, now, max_lateness) else slot


def is_paused(paused_until: datetime | None, at: datetime) -> bool:
    """Whether a reader's pause covers the slot at `at`; a slot at the pause's very end is sent."""
    return paused_until is not None and paused_until > at


def due_slot(
    status: SubscriberStatus,
    frequency: Frequency,
    tz: ZoneInfo,
    anchor: datetime,
    now: datetime,
    schedule: Schedule,
    max_lateness: timedelta | None = None,
    *,
    paused_until: datetime | None = None,
) -> Slot | None:
    """The slot to send now, or None when the subscriber is not due.

    Due means active, not paused at the slot, and the latest slot at or before now is later than
    the anchor (the slot of the last digest, or the confirmation instant). Only the latest slot
    counts, so downtime that spans several slots yields one catch-up digest, not one per missed
    slot; a pause leaves anchor and cursor alone, so its end brings one catch-up digest too.
    """
    if status is not SubscriberStatus.ACTIVE:
        return None
    slot = sendable_slot(frequency, schedule, tz, now, max_lateness)
    if slot is None or slot.at <= anchor or is_paused(paused_until, slot.at):
        return None
    return slot


# What the pages offer a reader instead of leaving: (form value, words, months, weeks).
PAUSES = (
    ("2-weeks", "2 weeks", 0, 2),
    ("1-month", "a month", 1, 0),
    ("3-months", "3 months", 3, 0),
)


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The start of a day in a timezone, in UTC: where a pause "until 9 December" ends."""
    return datetime.combine(day, time(0, 0), tzinfo=tz).astimezone(UTC)


def pause_end(now: datetime, tz: ZoneInfo, *, months: int = 0, weeks: int = 0) -> datetime:
    """A pause of that long from now ends at the reader's midnight of the day it comes to: two
    weeks from Wednesday is the Wednesday after next; a month from 31 January is 28 February."""
    today = now.astimezone(tz).date()
    month_index = today.year * 12 + today.month - 1 + months
    year, month = month_index // 12, month_index % 12 + 1
    day = date(year, month, min(today.day, calendar.monthrange(year, month)[1]))
    return local_midnight(day + timedelta(weeks=weeks), tz)


@dataclass(frozen=True, slots=True)
class NextDigest:
    slot: Slot
    due_now: bool  # slot is due already: the next dispatch run sends it, not slot.at


def next_digest(
    status: SubscriberStatus,
    frequency: Frequency,
    tz: ZoneInfo,
    anchor: datetime,
    now: datetime,
    schedule: Schedule,
    max_lateness: timedelta | None = None,
    *,
    news: bool,
    paused_until: datetime | None = None,
) -> NextDigest | None:
    """When a reader's next digest really goes out; None for a reader who gets none.

    news says whether articles after the reader's cursor exist at now. A due reader with news
    gets theirs at the next dispatch run; a due reader without has the slot skipped, and every
    other reader waits for the first slot after both now and their anchor: a send at a later
    --now moves the anchor past the real now, and nothing goes out until the slot after it. A
    paused reader waits for the first slot at or after their pause's end, too.
    """
    due = due_slot(
        status, frequency, tz, anchor, now, schedule, max_lateness, paused_until=paused_until
    )
    if due is not None and news:
        return NextDigest(due, due_now=True)
    if status is not SubscriberStatus.ACTIVE:
        return None
    after = max(now, anchor)
    if paused_until is not None and paused_until > after:
        after = paused_until - timedelta(microseconds=1)  # a slot at the very end is sent
    return NextDigest(next_slot(frequency, schedule, tz, after), due_now=False)


def retry_delay(attempts: int, base: timedelta, cap: timedelta) -> timedelta:
    """Exponential backoff after the given number of failed attempts (1, 2, ...)."""
    exponent = min(max(attempts - 1, 0), 32)
    delay: timedelta = base * (2**exponent)
    return min(delay, cap)


class SmtpStage(StrEnum):
    CONNECT = "connect"
    HELO = "helo"
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class ReplyClass(StrEnum):
    TRANSIENT = "transient"  # try again later
    PERMANENT = "permanent"  # this recipient will not take mail
    CONFIG = "config"  # our settings are wrong: stop, blame no subscriber


def classify_reply(stage: SmtpStage, code: int | None) -> ReplyClass:
    """Classify a failed SMTP step; code None means a dropped connection or a timeout."""
    # 552 is "storage exceeded": RFC 5321 §4.5.3.1.10 says treat it as temporary.
    if code is None or 400 <= code < 500 or code == 552:
        return ReplyClass.TRANSIENT
    if stage in (SmtpStage.RCPT, SmtpStage.DATA):
        return ReplyClass.PERMANENT
    return ReplyClass.CONFIG


@dataclass(frozen=True, slots=True)
class RunSummary:
    sent: int = 0
    skipped: int = 0
    retrying: int = 0
    failed: int = 0

    def __add__(self, other: RunSummary) -> RunSummary:
        return RunSummary(
            self.sent + other.sent,
            self.skipped + other.skipped,
            self.retrying + other.retrying,
            self.failed + other.failed,
        )

    @property
    def idle(self) -> bool:
        """Nothing was sent, skipped, retried or failed: a run not worth a log line at INFO."""
        return self == RunSummary()

    def line(self) -> str:
        return (
            f"sent {self.sent}, skipped {self.skipped}, "
            f"retrying {self.retrying}, failed {self.failed}"
        )


@dataclass(frozen=True, slots=True)
class ArticleDraft:
    """An article as a feed or a person gives it, before it has an ingest sequence."""

    url: str
    title: str
    summary: str
    category: str
    reading_minutes: int
    published_at: datetime  # UTC
    image_url: str | None = None  # an https picture on the publisher's site, shown as it is
    featured: bool = False  # an editor's pick: the lead story and shown first


@dataclass(frozen=True, slots=True)
class Article:
    seq: int  # the ingest sequence: cursors run on this, not on published_at
    url: str
    title: str
    summary: str  # sanitised HTML or plain text, safe to mark safe after nh3
    category: str
    reading_minutes: int
    published_at: datetime  # UTC
    image_url: str | None = None
    featured: bool = False


@dataclass(frozen=True, slots=True)
class SubscriberDraft:
    email: str  # normalised
    frequency: Frequency
    timezone: str  # a valid IANA name
    send_time: time | None = None  # the reader's own, in their timezone; None: the site's
    send_weekday: int | None = None  # a weekly reader's own day, 0 = Monday; None: the site's
    topics: frozenset[str] | None = None  # topic keys; None: every topic, later ones too


@dataclass(frozen=True, slots=True)
class Claim:
    """A delivery this worker holds the lease on, with what it needs to build the mail."""

    delivery_id: int
    subscriber_id: int
    email: str
    frequency: Frequency
    token_version: int
    period_key: str
    cursor_from: int  # exclusive
    cursor_to: int  # inclusive: the newest article at planning time
    message_id: str  # fixed at planning, the same on every retry
    planned_at: datetime  # the Date header, fixed at planning
    attempts: int
    topics: frozenset[str] | None = None  # the reader's (Subscriber.topics): their body's articles

    @property
    def window(self) -> tuple[Frequency, int, int]:
        """Claims with the same window get the same body."""
        return (self.frequency, self.cursor_from, self.cursor_to)


@dataclass(frozen=True, slots=True)
class SentDigest:
    """A digest that went out, as the ledger keeps it: what its web version renders again and the
    reader's history lists."""

    delivery_id: int
    subscriber_id: int
    token_version: int  # the reader's now: the web version's link must carry it
    period_key: str
    cursor_from: int  # exclusive
    cursor_to: int  # inclusive
    sent_at: datetime
    articles: int  # in the window, as the digest counted them
    topics: frozenset[str] | None = None  # the reader's at planning (Claim.topics)

    @property
    def frequency(self) -> Frequency:
        """The frequency it went out at, from its period: the reader's may have changed since."""
        return period_frequency(self.period_key)

    @property
    def window(self) -> tuple[Frequency, int, int]:
        """As Claim.window: the same window renders the same body."""
        return (self.frequency, self.cursor_from, self.cursor_to)


_NOT_A_WORD = re.compile(r"[\W_]+")


def topic_key(category: str) -> str:
    """The one topic that spellings of a category from different feeds name: case, spacing,
    punctuation and "&" against "and" aside ("Medical News & Research" is "medical news and
    research"). Only letters (of any script), digits and single spaces, so keys join on ","."""
    words = _NOT_A_WORD.sub(" ", category.casefold().replace("&", " and "))
    return " ".join(words.split())


@dataclass(frozen=True, slots=True)
class Subscriber:
    id: int
    email: str
    frequency: Frequency
    status: SubscriberStatus
    timezone: str
    token_version: int
    created_at: datetime
    confirmed_at: datetime | None
    cursor: int
    anchor: datetime
    bounces: int
    topics: frozenset[str] | None = (
        None  # topic keys (topic_key); None: every topic, later ones too
    )
    paused_until: datetime | None = None  # UTC; nothing is sent before it
    send_time: time | None = None  # in the reader's timezone; None: the site's schedule
    send_weekday: int | None = None  # a weekly reader's day, 0 = Monday; None: the site's

    def next_digest(
        self, now: datetime, schedule: Schedule, max_lateness: timedelta | None, *, news: bool
    ) -> NextDigest | None:
        """next_digest for this reader: news says whether articles after their cursor exist."""
        return next_digest(
            self.status,
            self.frequency,
            ZoneInfo(self.timezone),
            self.anchor,
            now,
            schedule.for_reader(self.send_time, self.send_weekday),
            max_lateness,
            news=news,
            paused_until=self.paused_until,
        )


@dataclass(frozen=True, slots=True)
class Only:
    """Narrows a run to one frequency and/or one address."""

    frequency: Frequency | None = None
    email: str | None = None


EVERYONE = Only()


@dataclass(frozen=True, slots=True)
class Run:
    started_at: datetime
    finished_at: datetime
    summary: RunSummary
    note: str


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    url: str
    sender: str  # the From header value, e.g. "Mia's Feed <digest@example.org>"
    list_id: str  # the List-Id header value, e.g. "Mia's Feed digest <digest.example.org>"
    postal_address: str | None = None  # the sender's, in every digest's footer (CAN-SPAM)
    disclaimer: str | None = None  # a line in every digest's footer


@dataclass(frozen=True, slots=True)
class RowError:
    """One bad row of an import, by place (a CSV line, a feed's item), and what is wrong with it."""

    where: str
    reason: str


class Progress(Protocol):
    """What a send run tells about its progress, e.g. the CLI's progress bar."""

    def start(self, total: int) -> None: ...
    def advance(self, count: int) -> None: ...


@dataclass(frozen=True, slots=True)
class Validators:
    """What a server said identifies its answer, sent back so that an unchanged feed costs a 304."""

    etag: str | None = None
    last_modified: str | None = None
