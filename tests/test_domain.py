"""The pure core, tested with tables of instants: midnight, DST both ways, ISO week 53, month ends."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from digest.domain import (
    Feedback,
    Frequency,
    NoticeKind,
    ReplyClass,
    RunSummary,
    Schedule,
    SmtpStage,
    Subscriber,
    SubscriberStatus,
    classify_reply,
    day_and_month,
    due_slot,
    edition,
    latest_slot,
    next_digest,
    next_slot,
    pause_end,
    period_frequency,
    period_key,
    retry_delay,
    topic_key,
)

D, W, M = Frequency.DAILY, Frequency.WEEKLY, Frequency.MONTHLY
UTC_ZONE = ZoneInfo("UTC")
MADRID = ZoneInfo("Europe/Madrid")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
DEFAULT = Schedule()


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("frequency", "day", "key"),
    [
        (D, date(2026, 11, 24), "2026-11-24"),
        (W, date(2026, 11, 23), "2026-W48"),
        (W, date(2026, 11, 29), "2026-W48"),  # Sunday still belongs to the Monday's week
        (W, date(2026, 12, 31), "2026-W53"),  # 2026 has an ISO week 53
        (W, date(2027, 1, 3), "2026-W53"),  # ... that runs into January 2027
        (W, date(2027, 1, 4), "2027-W01"),
        (W, date(2024, 12, 30), "2025-W01"),  # ISO year differs from calendar year
        (M, date(2026, 11, 30), "2026-11"),
        (M, date(2028, 2, 29), "2028-02"),
    ],
)
def test_period_key_names_the_period_of_a_local_day_and_the_key_its_frequency(
    frequency: Frequency, day: date, key: str
) -> None:
    assert period_key(frequency, day) == key
    assert period_frequency(key) is frequency


@pytest.mark.parametrize(
    ("frequency", "key", "words"),
    [
        (D, "2026-11-25", "Wednesday 25 November"),
        (D, "2028-02-29", "Tuesday 29 February"),  # a leap day
        (D, "2027-01-01", "Friday 1 January"),
        (W, "2026-W48", "23–29 November"),
        (W, "2026-W49", "30 November – 6 December"),  # across months
        (W, "2026-W53", "28 December 2026 – 3 January 2027"),  # week 53, across years
        (W, "2025-W01", "30 December 2024 – 5 January 2025"),  # ISO year after the calendar's
        (W, "2028-W09", "28 February – 5 March"),  # with a leap day inside
        (W, "2026-W01", "29 December 2025 – 4 January 2026"),
        (M, "2026-11", "November 2026"),
        (M, "2028-02", "February 2028"),
    ],
)
def test_edition_names_the_period_in_the_sites_words(
    frequency: Frequency, key: str, words: str
) -> None:
    assert edition(frequency, key) == words


@pytest.mark.parametrize(
    ("frequency", "day"),
    [
        (D, date(2026, 11, 24)),
        (W, date(2026, 12, 31)),
        (W, date(2027, 1, 4)),
        (W, date(2024, 12, 30)),
        (M, date(2028, 2, 29)),
    ],
)
def test_edition_reads_every_key_period_key_makes(frequency: Frequency, day: date) -> None:
    assert edition(frequency, period_key(frequency, day))


@pytest.mark.parametrize(
    ("frequency", "key"),
    [
        (D, "2026-02-30"),
        (D, "2026-11-25T08:00"),
        (W, "2025-W53"),  # 2025 has 52 ISO weeks
        (W, "2026-48"),
        (M, "2026-13"),
        (M, "2026-W48"),
        (D, ""),
    ],
)
def test_edition_refuses_a_key_period_key_does_not_make(frequency: Frequency, key: str) -> None:
    with pytest.raises(ValueError):
        edition(frequency, key)


def test_a_date_is_written_day_then_month() -> None:
    assert day_and_month(date(2026, 11, 5)) == "5 November"


@pytest.mark.parametrize(
    ("frequency", "zone", "now", "slot_at", "key"),
    [
        # daily at 08:00 local: before 08:00 the latest slot is yesterday's
        (D, UTC_ZONE, "2026-11-24T07:59", "2026-11-23T08:00", "2026-11-23"),
        (D, UTC_ZONE, "2026-11-24T08:00", "2026-11-24T08:00", "2026-11-24"),
        (D, UTC_ZONE, "2026-11-24T23:59", "2026-11-24T08:00", "2026-11-24"),
        # Madrid is UTC+1 in November: 08:00 local is 07:00 UTC
        (D, MADRID, "2026-11-24T07:00", "2026-11-24T07:00", "2026-11-24"),
        (D, MADRID, "2026-11-24T06:59", "2026-11-23T07:00", "2026-11-23"),
        # Sydney's local date is already the 25th at 22:00 UTC on the 24th
        (D, SYDNEY, "2026-11-24T22:00", "2026-11-24T21:00", "2026-11-25"),
        # weekly on Monday 08:00: a Sunday evening still points at the previous Monday
        (W, UTC_ZONE, "2026-11-29T23:00", "2026-11-23T08:00", "2026-W48"),
        (W, UTC_ZONE, "2026-11-30T07:59", "2026-11-23T08:00", "2026-W48"),
        (W, UTC_ZONE, "2026-11-30T08:00", "2026-11-30T08:00", "2026-W49"),
        (W, UTC_ZONE, "2027-01-01T12:00", "2026-12-28T08:00", "2026-W53"),
        # monthly on the 1st 08:00
        (M, UTC_ZONE, "2026-12-01T07:59", "2026-11-01T08:00", "2026-11"),
        (M, UTC_ZONE, "2026-12-01T08:00", "2026-12-01T08:00", "2026-12"),
        (M, UTC_ZONE, "2027-01-01T00:00", "2026-12-01T08:00", "2026-12"),
    ],
)
def test_latest_slot_is_the_last_send_time_at_or_before_now(
    frequency: Frequency, zone: ZoneInfo, now: str, slot_at: str, key: str
) -> None:
    slot = latest_slot(frequency, DEFAULT, zone, utc(now))
    assert (slot.at, slot.key) == (utc(slot_at), key)


@pytest.mark.parametrize(
    ("day", "now", "slot_at", "key"),
    [
        # a monthly day of 31 means the month's last day
        (31, "2027-02-28T09:00", "2027-02-28T08:00", "2027-02"),
        (31, "2027-02-28T07:00", "2027-01-31T08:00", "2027-01"),
        (31, "2028-02-29T08:00", "2028-02-29T08:00", "2028-02"),  # leap year
        (30, "2026-04-30T08:00", "2026-04-30T08:00", "2026-04"),
        (29, "2027-03-01T00:00", "2027-02-28T08:00", "2027-02"),
        (29, "2028-03-01T00:00", "2028-02-29T08:00", "2028-02"),
    ],
)
def test_monthly_day_past_the_month_end_means_its_last_day(
    day: int, now: str, slot_at: str, key: str
) -> None:
    schedule = Schedule(monthly_day=day)
    slot = latest_slot(M, schedule, UTC_ZONE, utc(now))
    assert (slot.at, slot.key) == (utc(slot_at), key)


@pytest.mark.parametrize(
    ("now", "slot_at"),
    [
        # Madrid springs forward on 2026-03-29 (CET → CEST): 08:00 local moves from 07:00 to 06:00 UTC
        ("2026-03-28T07:00", "2026-03-28T07:00"),
        ("2026-03-29T06:00", "2026-03-29T06:00"),
        ("2026-03-29T05:59", "2026-03-28T07:00"),
        # ... and falls back on 2026-10-25: 08:00 local moves from 06:00 to 07:00 UTC
        ("2026-10-24T06:00", "2026-10-24T06:00"),
        ("2026-10-25T06:30", "2026-10-24T06:00"),
        ("2026-10-25T07:00", "2026-10-25T07:00"),
    ],
)
def test_daily_slot_follows_local_send_time_across_dst_changes(now: str, slot_at: str) -> None:
    assert latest_slot(D, DEFAULT, MADRID, utc(now)).at == utc(slot_at)


def test_send_time_inside_a_dst_gap_resolves_forward_and_slots_stay_ordered() -> None:
    # 02:30 does not exist in New York on 2026-03-08; the slot still comes once, after 02:00.
    schedule = Schedule(send_time=time(2, 30))
    slots = [
        latest_slot(D, schedule, NEW_YORK, utc("2026-03-07T12:00") + timedelta(hours=h)).at
        for h in range(0, 72)
    ]
    assert sorted(set(slots)) == [
        utc("2026-03-07T07:30"),  # 02:30 EST
        utc("2026-03-08T07:30"),  # 03:30 EDT: where 02:30 EST would have been
        utc("2026-03-09T06:30"),  # 02:30 EDT
        utc("2026-03-10T06:30"),
    ]
    assert slots == sorted(slots)


# A reader's own send time, across Madrid's spring gap (2026-03-29, 02:00 → 03:00) and autumn
# repeat (2026-10-25, 03:00 → 02:00): (their time, now, latest slot, next slot), all UTC.
@pytest.mark.parametrize(
    ("send_time", "now", "latest", "upcoming"),
    [
        (time(6), "2026-03-28T05:00", "2026-03-28T05:00", "2026-03-29T04:00"),  # 06:00 CET
        (time(6), "2026-03-29T04:30", "2026-03-29T04:00", "2026-03-30T04:00"),  # 06:00 CEST
        (time(21), "2026-03-28T21:00", "2026-03-28T20:00", "2026-03-29T19:00"),
        (time(21), "2026-03-29T19:00", "2026-03-29T19:00", "2026-03-30T19:00"),
        (time(6), "2026-10-25T04:30", "2026-10-24T04:00", "2026-10-25T05:00"),  # 06:00 CET again
        (time(21), "2026-10-24T19:00", "2026-10-24T19:00", "2026-10-25T20:00"),
        # 02:30 on 29 March does not exist: it comes once, where 02:30 CET would have been
        (time(2, 30), "2026-03-29T01:30", "2026-03-29T01:30", "2026-03-30T00:30"),
        # 02:30 on 25 October comes twice: the slot is the first one (CEST), once
        (time(2, 30), "2026-10-25T01:29", "2026-10-25T00:30", "2026-10-26T01:30"),
    ],
)
def test_a_readers_own_send_time_follows_their_local_clock_across_dst_changes(
    send_time: time, now: str, latest: str, upcoming: str
) -> None:
    schedule = DEFAULT.for_reader(send_time, None)
    assert latest_slot(D, schedule, MADRID, utc(now)).at == utc(latest)
    assert next_slot(D, schedule, MADRID, utc(now)).at == utc(upcoming)


@pytest.mark.parametrize(
    ("send_time", "anchor", "now", "key"),
    [
        # On the day of the spring gap, at 12:00 UTC: the 06:00 reader's slot has passed, the
        # 21:00 reader's has not, so only the first is due; after a downtime, one catch-up each.
        (time(6), "2026-03-28T05:00", "2026-03-29T12:00", "2026-03-29"),
        (time(21), "2026-03-28T20:00", "2026-03-29T12:00", None),
        (time(21), "2026-03-25T20:00", "2026-03-29T12:00", "2026-03-28"),
        (time(21), "2026-10-24T19:00", "2026-10-25T20:00", "2026-10-25"),
        (time(21), "2026-10-24T19:00", "2026-10-25T19:59", None),  # 20:59 CET
    ],
)
def test_each_reader_is_due_at_their_own_hour_and_catches_up_once(
    send_time: time, anchor: str, now: str, key: str | None
) -> None:
    schedule = DEFAULT.for_reader(send_time, None)
    slot = due_slot(SubscriberStatus.ACTIVE, D, MADRID, utc(anchor), utc(now), schedule)
    assert (None if slot is None else slot.key) == key


SUNDAY = 6


@pytest.mark.parametrize(
    ("zone", "now", "latest", "key", "upcoming", "upcoming_key"),
    [
        # ISO week 53 of 2026 runs from Monday 28 December to Sunday 3 January 2027
        (UTC_ZONE, "2027-01-02T12:00", "2026-12-27T07:00", "2026-W52", "2027-01-03T07:00", "2026-W53"),
        (UTC_ZONE, "2027-01-03T07:00", "2027-01-03T07:00", "2026-W53", "2027-01-10T07:00", "2027-W01"),
        # Sunday 07:00 in Sydney is Saturday in UTC: the week is the reader's local one
        (SYDNEY, "2027-01-02T21:00", "2027-01-02T20:00", "2026-W53", "2027-01-09T20:00", "2027-W01"),
    ],
)  # fmt: skip
def test_a_weekly_reader_on_sunday_keeps_iso_weeks_across_the_year_boundary(
    zone: ZoneInfo, now: str, latest: str, key: str, upcoming: str, upcoming_key: str
) -> None:
    schedule = DEFAULT.for_reader(time(7), SUNDAY)
    slot = latest_slot(W, schedule, zone, utc(now))
    assert (slot.at, slot.key) == (utc(latest), key)
    after = next_slot(W, schedule, zone, utc(now))
    assert (after.at, after.key) == (utc(upcoming), upcoming_key)


@pytest.mark.parametrize(
    ("now", "latest", "key"),
    [
        # 21:00 in New York on the 31st is 02:00 UTC the next day: the month is still the local one
        ("2027-01-01T02:00", "2027-01-01T02:00", "2026-12"),
        ("2027-01-01T01:59", "2026-12-01T02:00", "2026-11"),  # 30 November, its last day
        ("2027-03-01T02:00", "2027-03-01T02:00", "2027-02"),  # 28 February
        ("2028-03-01T02:00", "2028-03-01T02:00", "2028-02"),  # 29 February, a leap year
        ("2027-04-01T01:00", "2027-04-01T01:00", "2027-03"),  # 31 March, in EDT
    ],
)
def test_a_monthly_reader_at_21_on_the_31st_gets_each_months_last_day(
    now: str, latest: str, key: str
) -> None:
    schedule = Schedule(monthly_day=31).for_reader(time(21), None)
    slot = latest_slot(M, schedule, NEW_YORK, utc(now))
    assert (slot.at, slot.key) == (utc(latest), key)


def test_site_schedule_is_kept_where_the_reader_chose_nothing() -> None:
    site = Schedule(send_time=time(9, 15), weekly_day=2, monthly_day=15)
    assert site.for_reader(None, None) == site
    assert site.for_reader(time(0), 0) == Schedule(time(0), 0, 15)  # midnight and Monday count


def test_a_subscribers_next_digest_follows_their_own_hour_and_weekday() -> None:
    reader = Subscriber(
        id=1, email="a@example.org", frequency=W, status=SubscriberStatus.ACTIVE,
        timezone="Europe/Madrid", token_version=1, created_at=utc("2026-11-01T00:00"),
        confirmed_at=utc("2026-11-01T00:00"), cursor=0, anchor=utc("2026-11-01T00:00"),
        bounces=0, send_time=time(21), send_weekday=SUNDAY,
    )  # fmt: skip
    upcoming = reader.next_digest(utc("2026-11-23T12:00"), DEFAULT, None, news=False)
    assert upcoming is not None
    assert upcoming.slot.at == utc("2026-11-29T20:00")  # Sunday 21:00 CET


def test_weekly_slot_honours_the_configured_weekday() -> None:
    friday = Schedule(weekly_day=4, send_time=time(17, 0))
    slot = latest_slot(W, friday, UTC_ZONE, utc("2026-11-24T10:00"))
    assert slot.at == utc("2026-11-20T17:00")
    assert slot.key == "2026-W47"


@pytest.mark.parametrize(
    ("frequency", "now", "expected"),
    [
        (D, "2026-11-24T08:00", "2026-11-25T08:00"),  # strictly after now
        (D, "2026-11-24T07:59", "2026-11-24T08:00"),
        (W, "2026-11-24T10:00", "2026-11-30T08:00"),
        (M, "2026-11-24T10:00", "2026-12-01T08:00"),
        (M, "2026-12-31T10:00", "2027-01-01T08:00"),
    ],
)
def test_next_slot_is_the_first_send_time_after_now(
    frequency: Frequency, now: str, expected: str
) -> None:
    assert next_slot(frequency, DEFAULT, UTC_ZONE, utc(now)).at == utc(expected)


def _due(
    frequency: Frequency,
    anchor: str,
    now: str,
    status: SubscriberStatus = SubscriberStatus.ACTIVE,
    zone: ZoneInfo = UTC_ZONE,
    max_lateness: timedelta | None = None,
) -> str | None:
    slot = due_slot(status, frequency, zone, utc(anchor), utc(now), DEFAULT, max_lateness)
    return None if slot is None else slot.key


def test_weekly_reader_confirmed_on_tuesday_waits_for_next_monday_0800() -> None:
    assert _due(W, anchor="2026-11-24T10:00", now="2026-11-29T23:59") is None
    assert _due(W, anchor="2026-11-24T10:00", now="2026-11-30T07:59") is None
    assert _due(W, anchor="2026-11-24T10:00", now="2026-11-30T08:00") == "2026-W49"


def test_reader_is_not_due_again_in_the_same_period_after_a_digest() -> None:
    assert _due(D, anchor="2026-11-24T08:00", now="2026-11-24T20:00") is None
    assert _due(D, anchor="2026-11-24T08:00", now="2026-11-25T08:00") == "2026-11-25"


def test_downtime_over_several_slots_yields_one_catch_up_for_the_latest_slot() -> None:
    # Last digest on the 1st; the service was down until the 5th: one digest, for the 5th.
    assert _due(D, anchor="2026-11-01T08:00", now="2026-11-05T12:00") == "2026-11-05"
    assert _due(W, anchor="2026-10-05T08:00", now="2026-11-24T12:00") == "2026-W48"


def test_a_slot_older_than_max_lateness_is_not_caught_up_late() -> None:
    six_hours = timedelta(hours=6)
    assert _due(D, "2026-11-23T08:00", "2026-11-24T13:59", max_lateness=six_hours) == "2026-11-24"
    assert _due(D, "2026-11-23T08:00", "2026-11-24T14:01", max_lateness=six_hours) is None


@pytest.mark.parametrize(
    "status", [s for s in SubscriberStatus if s is not SubscriberStatus.ACTIVE]
)
def test_only_active_readers_are_ever_due(status: SubscriberStatus) -> None:
    assert _due(D, "2026-11-01T08:00", "2026-11-24T12:00", status=status) is None


def test_readers_in_madrid_and_sydney_are_each_due_at_their_own_0800() -> None:
    anchor = "2026-11-20T00:00"
    # 21:00 UTC on the 24th is 08:00 on the 25th in Sydney (AEDT, UTC+11), 22:00 in Madrid.
    assert _due(D, anchor, "2026-11-24T20:59", zone=SYDNEY) == "2026-11-24"
    assert _due(D, "2026-11-24T21:00", "2026-11-24T21:00", zone=SYDNEY) is None
    assert _due(D, "2026-11-24T20:00", "2026-11-24T21:00", zone=SYDNEY) == "2026-11-25"
    assert _due(D, "2026-11-24T07:00", "2026-11-24T21:00", zone=MADRID) is None
    assert _due(D, "2026-11-24T06:59", "2026-11-24T21:00", zone=MADRID) == "2026-11-24"


@pytest.mark.parametrize(
    ("frequency", "anchor", "now", "news", "expected"),
    [
        # due with news: the next dispatch run sends it, whatever the next slot is
        (D, "2026-11-24T08:00", "2026-11-25T09:00", True, "now 2026-11-25"),
        # weekly -> daily on a Wednesday: the anchor is Monday's weekly slot, so daily is due at once
        (D, "2026-11-23T08:00", "2026-11-25T17:00", True, "now 2026-11-25"),
        # ... but with nothing new the slot is skipped: Thursday it is
        (D, "2026-11-23T08:00", "2026-11-25T17:00", False, "2026-11-26T08:00"),
        # daily -> weekly on a Wednesday: Wednesday's daily digest went out, so next Monday
        (W, "2026-11-25T08:00", "2026-11-25T17:00", True, "2026-11-30T08:00"),
        (W, "2026-11-24T10:00", "2026-11-24T10:00", True, "2026-11-30T08:00"),  # just confirmed
        (M, "2026-11-24T10:00", "2026-11-30T10:00", True, "2026-12-01T08:00"),
        # a send at a far-future --now anchored the reader there: nothing until the slot after it
        (D, "2030-06-01T08:00", "2026-11-25T17:00", True, "2030-06-02T08:00"),
        (W, "2030-06-03T08:00", "2026-11-25T17:00", True, "2030-06-10T08:00"),
        (D, "2030-06-01T08:00", "2030-06-01T07:00", True, "2030-06-02T08:00"),
    ],
)
def test_next_digest_is_now_when_due_with_news_else_the_first_slot_after_now_and_anchor(
    frequency: Frequency, anchor: str, now: str, news: bool, expected: str
) -> None:
    upcoming = next_digest(
        SubscriberStatus.ACTIVE, frequency, UTC_ZONE, utc(anchor), utc(now), DEFAULT, news=news
    )
    assert upcoming is not None
    if upcoming.due_now:
        assert f"now {upcoming.slot.key}" == expected
    else:
        assert upcoming.slot.at == utc(expected)


def test_next_digest_after_a_slot_too_late_to_catch_up_is_the_next_slot() -> None:
    upcoming = next_digest(
        SubscriberStatus.ACTIVE,
        D,
        UTC_ZONE,
        utc("2026-11-23T08:00"),
        utc("2026-11-24T14:01"),
        DEFAULT,
        timedelta(hours=6),
        news=True,
    )
    assert upcoming is not None
    assert (upcoming.due_now, upcoming.slot.at) == (False, utc("2026-11-25T08:00"))


@pytest.mark.parametrize(
    "status", [s for s in SubscriberStatus if s is not SubscriberStatus.ACTIVE]
)
def test_a_reader_who_is_not_active_has_no_next_digest(status: SubscriberStatus) -> None:
    anchor, now = utc("2026-11-01T08:00"), utc("2026-11-24T12:00")
    assert next_digest(status, D, UTC_ZONE, anchor, now, DEFAULT, news=True) is None


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (40, 3600), (1000, 3600)],
)
def test_retry_delay_doubles_from_the_base_up_to_the_cap(attempts: int, seconds: int) -> None:
    delay = retry_delay(attempts, timedelta(seconds=60), timedelta(hours=1))
    assert delay == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("stage", "code", "expected"),
    [
        (SmtpStage.CONNECT, None, ReplyClass.TRANSIENT),
        (SmtpStage.CONNECT, 421, ReplyClass.TRANSIENT),
        (SmtpStage.CONNECT, 554, ReplyClass.CONFIG),
        (SmtpStage.AUTH, 535, ReplyClass.CONFIG),
        (SmtpStage.AUTH, 454, ReplyClass.TRANSIENT),
        (SmtpStage.MAIL, 553, ReplyClass.CONFIG),
        (SmtpStage.MAIL, 451, ReplyClass.TRANSIENT),
        (SmtpStage.MAIL, 552, ReplyClass.TRANSIENT),
        (SmtpStage.RCPT, 550, ReplyClass.PERMANENT),
        (SmtpStage.RCPT, 552, ReplyClass.TRANSIENT),
        (SmtpStage.RCPT, 450, ReplyClass.TRANSIENT),
        (SmtpStage.DATA, 554, ReplyClass.PERMANENT),
        (SmtpStage.DATA, 451, ReplyClass.TRANSIENT),
        (SmtpStage.DATA, None, ReplyClass.TRANSIENT),
    ],
)
def test_smtp_replies_are_classified_as_reliability_rule_6_says(
    stage: SmtpStage, code: int | None, expected: ReplyClass
) -> None:
    assert classify_reply(stage, code) is expected


def test_run_summary_adds_up_and_prints_the_documented_line() -> None:
    total = RunSummary(sent=2, skipped=1) + RunSummary(sent=1, retrying=3, failed=1)
    assert total.line() == "sent 3, skipped 1, retrying 3, failed 1"


@pytest.mark.parametrize(
    ("category", "key"),
    [
        ("Medical News & Research", "medical news and research"),
        ("medical news and research", "medical news and research"),
        ("  Medical   News &Research ", "medical news and research"),
        ("Public-Health", "public health"),
        ("NUTRITION", "nutrition"),
        ("Straße", "strasse"),
        ("Santé & Société", "santé and société"),
        ("", ""),
    ],
)
def test_spellings_of_a_category_from_different_feeds_are_one_topic(
    category: str, key: str
) -> None:
    assert topic_key(category) == key


def _due_paused(frequency: Frequency, anchor: str, now: str, paused_until: str) -> str | None:
    slot = due_slot(
        SubscriberStatus.ACTIVE,
        frequency,
        UTC_ZONE,
        utc(anchor),
        utc(now),
        DEFAULT,
        timedelta(hours=6),
        paused_until=utc(paused_until),
    )
    return None if slot is None else slot.key


@pytest.mark.parametrize(
    ("frequency", "anchor", "now", "paused_until", "expected"),
    [
        # paused from the 1st to the 9th: no slot in between is due, however late the run
        (D, "2026-11-30T08:00", "2026-12-01T08:00", "2026-12-09T00:00", None),
        (D, "2026-11-30T08:00", "2026-12-08T13:59", "2026-12-09T00:00", None),
        # the first slot after the pause: one catch-up, for that slot only
        (D, "2026-11-30T08:00", "2026-12-09T08:00", "2026-12-09T00:00", "2026-12-09"),
        # max_lateness counts from that slot, not from the pause's start or the last digest
        (D, "2026-11-30T08:00", "2026-12-09T13:59", "2026-12-09T00:00", "2026-12-09"),
        # a slot at the pause's very end is sent; one an instant before it is not
        (D, "2026-11-30T08:00", "2026-12-09T08:00", "2026-12-09T08:00", "2026-12-09"),
        (D, "2026-11-30T08:00", "2026-12-09T08:00", "2026-12-09T08:00:01", None),
        # a weekly reader paused over two Mondays gets the Monday after the pause
        (W, "2026-11-23T08:00", "2026-12-07T08:00", "2026-12-09T00:00", None),
        (W, "2026-11-23T08:00", "2026-12-14T08:00", "2026-12-09T00:00", "2026-W51"),
        # a monthly reader paused past the 1st waits for the next month's
        (M, "2026-11-01T08:00", "2026-12-01T08:00", "2026-12-02T00:00", None),
        (M, "2026-11-01T08:00", "2027-01-01T08:00", "2026-12-02T00:00", "2027-01"),
        # a pause that ended long ago changes nothing
        (D, "2026-11-30T08:00", "2026-12-01T08:00", "2026-01-01T00:00", "2026-12-01"),
    ],
)
def test_a_paused_reader_is_due_only_at_the_first_slot_at_or_after_the_pause_ends(
    frequency: Frequency, anchor: str, now: str, paused_until: str, expected: str | None
) -> None:
    assert _due_paused(frequency, anchor, now, paused_until) == expected


@pytest.mark.parametrize(
    ("frequency", "now", "paused_until", "news", "expected"),
    [
        (D, "2026-12-01T09:00", "2026-12-09T00:00", True, "2026-12-09T08:00"),
        (D, "2026-12-01T09:00", "2026-12-09T08:00", True, "2026-12-09T08:00"),
        (W, "2026-12-01T09:00", "2026-12-09T00:00", True, "2026-12-14T08:00"),
        (M, "2026-12-01T09:00", "2027-02-15T00:00", False, "2027-03-01T08:00"),
        # over: as if never paused
        (D, "2026-12-09T09:00", "2026-12-09T00:00", True, "now 2026-12-09"),
    ],
)
def test_a_paused_readers_next_digest_is_the_first_slot_at_or_after_the_pause_ends(
    frequency: Frequency, now: str, paused_until: str, news: bool, expected: str
) -> None:
    upcoming = next_digest(
        SubscriberStatus.ACTIVE,
        frequency,
        UTC_ZONE,
        utc("2026-11-01T08:00"),
        utc(now),
        DEFAULT,
        news=news,
        paused_until=utc(paused_until),
    )
    assert upcoming is not None
    if upcoming.due_now:
        assert f"now {upcoming.slot.key}" == expected
    else:
        assert upcoming.slot.at == utc(expected)


@pytest.mark.parametrize(
    ("now", "zone", "months", "weeks", "expected"),
    [
        # two weeks from Wednesday 25 November: midnight starting Wednesday 9 December, Madrid
        ("2026-11-25T10:00", MADRID, 0, 2, "2026-12-08T23:00"),
        ("2026-11-25T10:00", MADRID, 1, 0, "2026-12-24T23:00"),
        ("2026-11-25T10:00", MADRID, 3, 0, "2027-02-24T23:00"),
        # a month from 31 January is the month's last day
        ("2027-01-31T10:00", UTC_ZONE, 1, 0, "2027-02-28T00:00"),
        # the reader's own day: already the 26th in Sydney
        ("2026-11-25T20:00", SYDNEY, 0, 2, "2026-12-09T13:00"),
        # across the DST change: New York's midnight moves from UTC-4 to UTC-5
        ("2026-10-20T12:00", NEW_YORK, 0, 2, "2026-11-03T05:00"),
    ],
)
def test_a_pause_ends_at_the_readers_midnight_of_the_day_it_comes_to(
    now: str, zone: ZoneInfo, months: int, weeks: int, expected: str
) -> None:
    assert pause_end(utc(now), zone, months=months, weeks=weeks) == utc(expected)


@pytest.mark.parametrize(
    ("sent", "counts", "warned"),
    [
        (1000, {NoticeKind.COMPLAINT: 1, NoticeKind.BOUNCE: 20}, []),  # at the limits: no warning
        (1000, {NoticeKind.COMPLAINT: 2}, ["complaint"]),
        (1000, {NoticeKind.BOUNCE: 21, NoticeKind.DELAY: 500}, ["bounce"]),  # delays never warn
        (0, {NoticeKind.COMPLAINT: 3}, []),  # nothing sent: no rate to speak of
    ],
)
def test_feedback_warns_for_each_rate_over_its_limit(
    sent: int, counts: dict[NoticeKind, int], warned: list[str]
) -> None:
    warnings = Feedback(sent, counts).warnings()
    assert [warning.split()[1] for warning in warnings] == warned
