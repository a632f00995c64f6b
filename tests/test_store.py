"""The delivery ledger and the catalogue, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest
from db_fixtures import deliveries_of
from sqlalchemy import insert
from test_claims import statements_sent

from digest import ledger as ledger_module
from digest.domain import (
    ArticleDraft,
    Claim,
    DeliveryStatus,
    Frequency,
    NextDigest,
    Only,
    ReaderGroup,
    RunSummary,
    Schedule,
    SubscriberDraft,
    SubscriberStatus,
)
from digest.errors import DuplicateSubscriber, NotFound
from digest.ingest import MAX_URL_CHARS
from digest.ledger import Failure, FinishRules, Ledger, Planned, PlanRules
from digest.models import DeliveryRow
from digest.store import Outlook, Signup, Store

MONDAY_0900 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
WEEK_BEFORE = MONDAY_0900 - timedelta(days=7)
RULES = PlanRules(Schedule(), max_lateness=None, batch_size=2, message_domain="example.org")
FINISH = FinishRules(
    retry_limit=3,
    retry_base=timedelta(minutes=1),
    retry_cap=timedelta(hours=1),
    bounce_limit=2,
)
LEASE = timedelta(minutes=15)


def article(n: int, published: datetime = WEEK_BEFORE) -> ArticleDraft:
    return ArticleDraft(
        url=f"https://miasfeed.example/articles/{n}",
        title=f"Article {n}",
        summary=f"Summary {n}",
        category="Medical News & Research",
        reading_minutes=2,
        published_at=published,
    )


def reader(email: str, frequency: Frequency = Frequency.WEEKLY, tz: str = "UTC") -> SubscriberDraft:
    return SubscriberDraft(email, frequency, tz)


def seed(store: Store, *emails: str, articles: int = 3) -> None:
    store.add_subscribers([reader(e) for e in emails], confirmed=True, now=WEEK_BEFORE)
    store.upsert_articles([article(n) for n in range(articles)], WEEK_BEFORE + timedelta(hours=1))


def claim_all(ledger: Ledger, owner: str = "w1", now: datetime = MONDAY_0900) -> list[Claim]:
    return ledger.claim(owner, now, LEASE, 100)


def statuses(ledger: Ledger, email: str) -> list[DeliveryStatus]:
    return [status for _, status, _, _ in deliveries_of(ledger.engine, email)]


def test_planning_twice_creates_one_pending_delivery_per_reader_and_period(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org", "c@example.org")
    ledger.plan(MONDAY_0900, RULES)
    ledger.plan(MONDAY_0900, RULES)
    for email in ("a@example.org", "b@example.org", "c@example.org"):
        assert deliveries_of(ledger.engine, email) == [
            ("2026-W49", DeliveryStatus.PENDING, 0, None)
        ]


def test_reader_with_no_new_articles_gets_a_skipped_row_and_no_claim(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", articles=0)
    assert ledger.plan(MONDAY_0900, RULES) == RunSummary(skipped=1)
    assert statuses(ledger, "a@example.org") == [DeliveryStatus.SKIPPED]
    assert claim_all(ledger) == []
    # The anchor moved to the slot: planning again later in the week finds nobody due.
    assert ledger.plan(MONDAY_0900 + timedelta(days=2), RULES) == RunSummary()
    assert store.find_subscriber("a@example.org").cursor == 0


def test_readers_are_not_due_before_their_slot(store: Store, ledger: Ledger) -> None:
    seed(store, "a@example.org")
    ledger.plan(MONDAY_0900 - timedelta(hours=2), RULES)  # Monday 07:00, slot at 08:00
    assert deliveries_of(ledger.engine, "a@example.org") == []


def test_readers_in_one_timezone_are_due_at_their_own_hour_with_one_query_a_group(
    store: Store, ledger: Ledger
) -> None:
    def daily(email: str, at: time | None = None) -> SubscriberDraft:
        return SubscriberDraft(email, Frequency.DAILY, "Europe/Madrid", send_time=at)

    monday = datetime(2026, 11, 30, tzinfo=UTC)  # Madrid is at UTC+1: 06:00 there is 05:00 UTC
    readers = [
        daily("early@example.org", time(6)),
        daily("site@example.org"),  # the site's 08:00
        # A day kept from weekly does not count for a daily reader: still the site's group.
        SubscriberDraft("was-weekly@example.org", Frequency.DAILY, "Europe/Madrid", None, 6),
        daily("late@example.org", time(21)),
        daily("late@example.com", time(21)),
    ]
    store.add_subscribers(readers, confirmed=True, now=monday)
    store.upsert_articles([article(n) for n in range(3)], monday + timedelta(minutes=30))

    def plan(hours: float) -> int:
        """Plan at monday + hours; how many INSERTs of deliveries it took."""
        with statements_sent(ledger.engine) as sent:
            ledger.plan(monday + timedelta(hours=hours), RULES)
        return sum(statement.startswith("INSERT INTO deliveries") for statement, _ in sent)

    def planned() -> list[str]:
        return [r.email for r in readers if deliveries_of(ledger.engine, r.email)]

    # One statement a group (06:00, the site's, 21:00), not one a reader.
    assert plan(5.5) == 3
    assert planned() == ["early@example.org"]
    assert plan(7.5) == 3
    by_eight = ["early@example.org", "site@example.org", "was-weekly@example.org"]
    assert planned() == by_eight
    assert plan(19.99) == 3
    assert planned() == by_eight
    assert plan(20) == 3
    assert planned() == [r.email for r in readers]
    for r in readers:
        assert deliveries_of(ledger.engine, r.email) == [
            ("2026-11-30", DeliveryStatus.PENDING, 0, None)
        ]


def test_claim_snapshot_carries_window_message_id_and_date_fixed_at_planning(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", articles=3)
    ledger.plan(MONDAY_0900, RULES)
    (claim,) = claim_all(ledger)
    assert (claim.cursor_from, claim.cursor_to) == (0, store.newest_seq(MONDAY_0900))
    assert claim.planned_at == MONDAY_0900
    assert claim.message_id.startswith("<") and claim.message_id.endswith("@example.org>")
    # A later article does not change the stored window, so a retry sends the same body.
    store.upsert_articles([article(99)], MONDAY_0900)
    ledger.record("w1", MONDAY_0900, [], [Failure(claim, "451 later", permanent=False)], FINISH)
    (again,) = claim_all(ledger, now=MONDAY_0900 + timedelta(hours=1))
    assert again.window == claim.window
    assert (again.message_id, again.planned_at) == (claim.message_id, claim.planned_at)


def test_a_window_taken_at_an_instant_holds_only_the_articles_ingested_by_then(
    store: Store,
    ledger: Ledger,
) -> None:
    seed(store, "a@example.org", articles=2)
    store.upsert_articles([article(7)], MONDAY_0900 + timedelta(minutes=1))  # after the run
    assert store.newest_seq(WEEK_BEFORE) == 0
    (would,) = next(ledger.preview_plan(MONDAY_0900, RULES))  # what --dry-run sends
    ledger.plan(MONDAY_0900, RULES)
    (claim,) = claim_all(ledger)
    assert would.window == claim.window
    titles = [a.title for a in store.articles(claim.cursor_from, claim.cursor_to)]
    assert titles == ["Article 1", "Article 0"]
    # Nothing is lost: the next digest starts where this one ended.
    ledger.record("w1", MONDAY_0900, [claim], [], FINISH)
    next_week = MONDAY_0900 + timedelta(days=7)
    ledger.plan(next_week, RULES)
    (later,) = claim_all(ledger, now=next_week)
    assert [a.title for a in store.articles(later.cursor_from, later.cursor_to)] == ["Article 7"]


def test_the_outlook_counts_each_group_as_next_digest_says_of_each_reader(store: Store) -> None:
    wednesday = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    weekly, madrid = (Frequency.WEEKLY, "UTC"), (Frequency.DAILY, "Europe/Madrid")

    def add(address: str, group: tuple[Frequency, str], confirmed: datetime) -> None:
        store.add_subscriber(reader(address, *group), confirmed=True, now=confirmed)

    add("due@example.org", weekly, WEEK_BEFORE)  # confirmed before any article: news
    add("gone@example.org", weekly, WEEK_BEFORE)
    add("due@example.com", madrid, WEEK_BEFORE)
    evening = SubscriberDraft("evening@example.com", Frequency.DAILY, "Europe/Madrid", time(21))
    store.add_subscriber(evening, confirmed=True, now=wednesday - timedelta(hours=1))
    store.upsert_articles([article(n) for n in range(3)], WEEK_BEFORE + timedelta(hours=1))
    add("far@example.org", weekly, datetime(2030, 6, 5, tzinfo=UTC))  # as after a far --now
    add("no-news@example.com", madrid, WEEK_BEFORE + timedelta(hours=2))
    add("today@example.com", madrid, wednesday - timedelta(hours=1))
    gone = store.find_subscriber("gone@example.org")
    store.unsubscribe(gone.id, gone.token_version, wednesday)

    outlook = store.outlook(wednesday, RULES.schedule, None)

    newest = store.newest_seq(wednesday)
    each: dict[ReaderGroup, list[NextDigest]] = {}
    for s in store.subscribers(SubscriberStatus.ACTIVE):
        upcoming = s.next_digest(wednesday, RULES.schedule, None, news=s.cursor < newest)
        assert upcoming is not None
        group = ReaderGroup(s.frequency, s.timezone, s.send_time, s.send_weekday)
        each.setdefault(group, []).append(upcoming)
    assert set(outlook) == set(each)
    for group, upcomings in each.items():
        slots = [u.slot for u in upcomings if not u.due_now]
        first = min(slots, key=lambda slot: slot.at)
        due = sum(u.due_now for u in upcomings)
        assert outlook[group] == Outlook(due, first, slots.count(first))
    # The far-future reader's next digest is the Monday after their anchor, not next Monday.
    weekly_outlook, madrid_outlook = outlook[ReaderGroup(*weekly)], outlook[ReaderGroup(*madrid)]
    assert weekly_outlook.first is not None and madrid_outlook.first is not None
    assert (weekly_outlook.due_now, weekly_outlook.first.at, weekly_outlook.at_first) == (
        1, datetime(2030, 6, 10, 8, 0, tzinfo=UTC), 1
    )  # fmt: skip
    assert (madrid_outlook.due_now, madrid_outlook.first.at, madrid_outlook.at_first) == (
        1, datetime(2026, 12, 3, 7, 0, tzinfo=UTC), 2
    )  # fmt: skip


def test_claimed_deliveries_are_not_claimed_twice_until_the_lease_expires(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org")
    ledger.plan(MONDAY_0900, RULES)
    assert len(claim_all(ledger, "w1")) == 2
    assert claim_all(ledger, "w2") == []
    expired = MONDAY_0900 + LEASE + timedelta(seconds=1)
    assert len(claim_all(ledger, "w2", now=expired)) == 2


def test_the_delivery_due_longest_is_claimed_first_whatever_its_id(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org")
    ledger.plan(MONDAY_0900, RULES)
    a, b = claim_all(ledger)
    # a's failure is recorded after a slow batch, so its retry falls due after b's.
    ledger.record(
        "w1", MONDAY_0900 + timedelta(minutes=5), [], [Failure(a, "451", permanent=False)], FINISH
    )
    ledger.record("w1", MONDAY_0900, [], [Failure(b, "451", permanent=False)], FINISH)
    later = MONDAY_0900 + timedelta(minutes=10)
    assert [c.email for c in ledger.claim("w2", later, LEASE, 1)] == ["b@example.org"]
    assert [c.email for c in ledger.claim("w2", later, LEASE, 1)] == ["a@example.org"]


def test_a_lease_that_ran_out_is_reclaimed_before_deliveries_that_fell_due_after_it(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org")
    ledger.plan(MONDAY_0900, RULES)
    a, _ = claim_all(ledger)
    # a is back to pending with a retry; b's worker died holding it.
    ledger.record("w1", MONDAY_0900, [], [Failure(a, "451", permanent=False)], FINISH)
    expired = MONDAY_0900 + LEASE + timedelta(seconds=1)
    assert [c.email for c in ledger.claim("w2", expired, LEASE, 1)] == ["b@example.org"]


def test_the_claimable_count_is_what_is_due_and_what_ran_out_of_lease_for_the_readers_asked(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org", "c@example.org")
    ledger.plan(MONDAY_0900, RULES)
    ledger.claim("w1", MONDAY_0900, LEASE, 1)  # a is leased
    (b,) = ledger.claim("w1", MONDAY_0900, LEASE, 1)
    ledger.record("w1", MONDAY_0900, [], [Failure(b, "451", permanent=False)], FINISH)
    assert ledger.count_claimable(MONDAY_0900) == 1  # c; b retries in a minute
    assert ledger.count_claimable(MONDAY_0900 + timedelta(minutes=1)) == 2
    expired = MONDAY_0900 + LEASE + timedelta(seconds=1)
    assert ledger.count_claimable(expired) == 3
    assert ledger.count_claimable(expired, Only(email="A@example.org")) == 1
    assert ledger.count_claimable(expired, Only(frequency=Frequency.DAILY)) == 0


def test_sent_advances_cursor_and_anchor_so_the_same_period_is_not_sent_again(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org")
    ledger.plan(MONDAY_0900, RULES)
    claims = claim_all(ledger)
    assert ledger.record("w1", MONDAY_0900, claims, [], FINISH) == RunSummary(sent=1)
    subscriber = store.find_subscriber("a@example.org")
    assert subscriber.cursor == store.newest_seq(MONDAY_0900)
    assert subscriber.anchor == datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    ledger.plan(MONDAY_0900 + timedelta(hours=3), RULES)
    assert statuses(ledger, "a@example.org") == [DeliveryStatus.SENT]


def test_an_article_added_after_a_digest_comes_in_the_next_one_only(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", articles=2)
    ledger.plan(MONDAY_0900, RULES)
    first = claim_all(ledger)
    ledger.record("w1", MONDAY_0900, first, [], FINISH)
    store.upsert_articles([article(7)], MONDAY_0900 + timedelta(hours=1))
    next_week = MONDAY_0900 + timedelta(days=7)
    ledger.plan(next_week, RULES)
    (second,) = claim_all(ledger, now=next_week)
    new = store.articles(second.cursor_from, second.cursor_to)
    assert [a.url for a in new] == [article(7).url]
    assert article(7).url not in [
        a.url for a in store.articles(first[0].cursor_from, first[0].cursor_to)
    ]


def test_finish_only_touches_rows_whose_lease_is_still_ours(store: Store, ledger: Ledger) -> None:
    seed(store, "a@example.org")
    ledger.plan(MONDAY_0900, RULES)
    stale = claim_all(ledger, "w1")
    late = MONDAY_0900 + LEASE + timedelta(minutes=1)
    fresh = claim_all(ledger, "w2", now=late)
    assert ledger.record("w1", late, stale, [], FINISH) == RunSummary()
    assert statuses(ledger, "a@example.org") == [DeliveryStatus.SENDING]
    assert ledger.record("w2", late, fresh, [], FINISH) == RunSummary(sent=1)
    assert statuses(ledger, "a@example.org") == [DeliveryStatus.SENT]


def test_transient_failure_retries_with_backoff_then_fails_at_the_retry_limit(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org")
    ledger.plan(MONDAY_0900, RULES)
    now = MONDAY_0900
    for attempt in (1, 2):
        (claim,) = claim_all(ledger, now=now)
        summary = ledger.record(
            "w1", now, [], [Failure(claim, "451 busy", permanent=False)], FINISH
        )
        assert summary == RunSummary(retrying=1)
        delay = timedelta(minutes=2 ** (attempt - 1))
        assert claim_all(ledger, now=now + delay - timedelta(seconds=1)) == []
        now += delay
    (claim,) = claim_all(ledger, now=now)
    assert ledger.record(
        "w1", now, [], [Failure(claim, "451 busy", permanent=False)], FINISH
    ) == RunSummary(failed=1)
    assert deliveries_of(ledger.engine, "a@example.org") == [
        ("2026-W49", DeliveryStatus.FAILED, 3, "451 busy")
    ]
    subscriber = store.find_subscriber("a@example.org")
    assert (subscriber.status, subscriber.bounces, subscriber.cursor) == (
        SubscriberStatus.ACTIVE,
        0,
        0,
    )


def test_permanent_failures_in_a_row_mark_the_reader_bounced_and_a_send_resets_the_count(
    store: Store,
    ledger: Ledger,
) -> None:
    seed(store, "a@example.org", "b@example.org")
    now = MONDAY_0900
    for week in range(2):
        store.upsert_articles([article(100 + week)], now - timedelta(hours=2))
        ledger.plan(now, RULES)
        claims = {c.email: c for c in claim_all(ledger, now=now)}
        bounce = Failure(claims["a@example.org"], "550 no such user", permanent=True)
        ledger.record("w1", now, [claims["b@example.org"]], [bounce], FINISH)
        now += timedelta(days=7)
    assert store.find_subscriber("a@example.org").status is SubscriberStatus.BOUNCED
    assert store.find_subscriber("b@example.org").bounces == 0
    store.upsert_articles([article(200)], now - timedelta(hours=2))
    ledger.plan(now, RULES)
    assert [c.email for c in claim_all(ledger, now=now)] == ["b@example.org"]


def test_a_reader_who_unsubscribes_after_planning_is_not_claimed(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org")
    ledger.plan(MONDAY_0900, RULES)
    reader = store.find_subscriber("a@example.org")
    store.unsubscribe(reader.id, reader.token_version, MONDAY_0900)
    assert [c.email for c in claim_all(ledger)] == ["b@example.org"]
    assert statuses(ledger, "a@example.org") == [DeliveryStatus.SKIPPED]


def test_a_reader_with_a_retry_outstanding_is_not_planned_for_the_next_period(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org")
    ledger.plan(MONDAY_0900, RULES)
    (claim,) = claim_all(ledger)
    ledger.record("w1", MONDAY_0900, [], [Failure(claim, "451", permanent=False)], FINISH)
    ledger.plan(MONDAY_0900 + timedelta(days=7), RULES)
    assert statuses(ledger, "a@example.org") == [DeliveryStatus.PENDING]


def test_release_hands_claims_back_without_counting_an_attempt(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org")
    ledger.plan(MONDAY_0900, RULES)
    ledger.release("w1", claim_all(ledger))
    (claim,) = claim_all(ledger, "w2")
    assert claim.attempts == 0


def test_planning_streams_every_due_reader_across_batches(
    store: Store, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "PLAN_CHUNK", 2)
    emails = [f"r{n}@example.org" for n in range(7)]
    seed(store, *emails)  # chunks of 2: four of them
    ledger.plan(MONDAY_0900, RULES)
    assert sorted(c.email for c in claim_all(ledger)) == sorted(emails)


def test_planning_goes_a_chunk_at_a_time_and_says_what_each_chunk_made(
    store: Store, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_module, "PLAN_CHUNK", 2)
    seed(store, *(f"r{n}@example.org" for n in range(5)))
    # Confirmed after the articles came: due on Monday, with nothing new, so skipped.
    late = WEEK_BEFORE + timedelta(hours=2)
    store.add_subscribers([reader("late@example.org")], confirmed=True, now=late)
    steps = list(ledger.planning(MONDAY_0900, RULES))
    assert steps == [Planned(2, 0), Planned(2, 0), Planned(1, 1)]


def test_planning_moves_past_a_reader_whose_row_is_there_already_and_plans_the_rest(
    store: Store, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A row for this period that another planner left finished, while the reader still looks
    # due: the insert conflicts and the reader stays due, so only the keyset moves planning on.
    monkeypatch.setattr(ledger_module, "PLAN_CHUNK", 2)
    emails = [f"r{n}@example.org" for n in range(5)]
    seed(store, *emails)
    stuck = store.find_subscriber("r0@example.org")
    with store.engine.begin() as conn:
        conn.execute(
            insert(DeliveryRow).values(
                subscriber_id=stuck.id,
                period_key="2026-W49",
                status=DeliveryStatus.FAILED.value,
                slot_at=MONDAY_0900,
                cursor_from=0,
                cursor_to=0,
                attempts=1,
                next_attempt_at=MONDAY_0900,
                message_id="<old@example.org>",
                planned_at=MONDAY_0900,
            )
        )
    assert ledger.plan(MONDAY_0900, RULES) == RunSummary()
    assert sorted(c.email for c in claim_all(ledger)) == emails[1:]


def test_only_narrows_planning_and_claiming_to_one_frequency_or_address(
    store: Store, ledger: Ledger
) -> None:
    store.add_subscribers(
        [reader("d@example.org", Frequency.DAILY), reader("w@example.org")],
        confirmed=True,
        now=WEEK_BEFORE,
    )
    store.upsert_articles([article(1)], WEEK_BEFORE + timedelta(hours=1))
    ledger.plan(MONDAY_0900, RULES, Only(frequency=Frequency.DAILY))
    assert deliveries_of(ledger.engine, "w@example.org") == []
    ledger.plan(MONDAY_0900, RULES, Only(email="w@example.org"))
    claims = ledger.claim("w1", MONDAY_0900, LEASE, 10, Only(email="w@example.org"))
    assert [c.email for c in claims] == ["w@example.org"]


def test_a_claim_narrowed_to_a_frequency_takes_only_its_readers_deliveries(
    store: Store, ledger: Ledger
) -> None:
    daily = ["d1@example.org", "d2@example.org"]
    store.add_subscribers(
        [
            reader(daily[0], Frequency.DAILY),
            reader("w@example.org"),
            reader(daily[1], Frequency.DAILY),
        ],
        confirmed=True,
        now=WEEK_BEFORE,
    )
    store.upsert_articles([article(1)], WEEK_BEFORE + timedelta(hours=1))
    ledger.plan(MONDAY_0900, RULES)
    assert ledger.count_claimable(MONDAY_0900, Only(frequency=Frequency.DAILY)) == 2
    claims = ledger.claim("w1", MONDAY_0900, LEASE, 10, Only(frequency=Frequency.DAILY))
    assert sorted(c.email for c in claims) == daily
    assert [c.email for c in claim_all(ledger)] == ["w@example.org"]


def test_preview_plan_lists_due_readers_and_writes_nothing(store: Store, ledger: Ledger) -> None:
    seed(store, "a@example.org", "b@example.org")
    would = [c for batch in ledger.preview_plan(MONDAY_0900, RULES) for c in batch]
    assert sorted(c.email for c in would) == ["a@example.org", "b@example.org"]
    assert deliveries_of(ledger.engine, "a@example.org") == []
    assert ledger.delivery_counts() == {}


def test_reimporting_an_article_updates_it_in_place(store: Store) -> None:
    store.upsert_articles([article(1), article(2)], WEEK_BEFORE)
    before = {a.url: a.seq for a in store.recent_articles(10)}
    changed = dataclasses.replace(article(1), title="Corrected title")
    result = store.upsert_articles([changed, article(3)], MONDAY_0900)
    assert (result.added, result.updated) == (1, 1)
    after = {a.url: a for a in store.recent_articles(10)}
    assert len(after) == 3
    assert after[article(1).url].seq == before[article(1).url]
    assert after[article(1).url].title == "Corrected title"


def test_an_articles_picture_and_pick_are_kept_and_read_back(store: Store) -> None:
    picked = dataclasses.replace(
        article(1), image_url="https://miasfeed.example/a.jpg", featured=True
    )
    store.upsert_articles([picked, article(2)], WEEK_BEFORE)
    kept = {a.url: (a.image_url, a.featured) for a in store.articles(0, 10)}
    assert kept == {
        article(1).url: ("https://miasfeed.example/a.jpg", True),
        article(2).url: (None, False),
    }


def test_a_reimport_never_unfeatures_an_article_nor_drops_its_picture_but_may_add_either(
    store: Store,
) -> None:
    url, picture = article(1).url, "https://miasfeed.example/a.jpg"
    marked = dataclasses.replace(article(1), featured=True)  # `articles add --featured`
    store.upsert_articles([marked, article(2)], WEEK_BEFORE)
    # A feed poll brings both again: 1 untagged and without a picture, 2 tagged and with one.
    polled = dataclasses.replace(article(2), featured=True, image_url=picture)
    store.upsert_articles([dataclasses.replace(article(1), title="New title"), polled], MONDAY_0900)
    kept = {a.url: (a.title, a.image_url, a.featured) for a in store.articles(0, 10)}
    assert kept == {url: ("New title", None, True), article(2).url: ("Article 2", picture, True)}
    # Once more without a picture or a tag: each keeps what it had; a new picture replaces one.
    moved = dataclasses.replace(article(1), image_url="https://miasfeed.example/b.jpg")
    store.upsert_articles([moved, article(2)], MONDAY_0900)
    again = {a.url: (a.image_url, a.featured) for a in store.articles(0, 10)}
    assert again == {url: ("https://miasfeed.example/b.jpg", True), article(2).url: (picture, True)}


def test_article_and_picture_urls_at_the_import_cap_fit_their_columns(store: Store) -> None:
    base = "https://miasfeed.example/"
    longest = base + "a" * (MAX_URL_CHARS - len(base))
    store.upsert_articles(
        [dataclasses.replace(article(1), url=longest, image_url=longest)], WEEK_BEFORE
    )
    (stored,) = store.articles(0, 10)
    assert (stored.url, stored.image_url) == (longest, longest)


def test_adding_a_known_address_is_reported_and_changes_nothing(store: Store) -> None:
    store.add_subscriber(reader("a@example.org"), confirmed=True, now=WEEK_BEFORE)
    with pytest.raises(DuplicateSubscriber, match=r"a@example\.org"):
        store.add_subscriber(
            reader("a@example.org", Frequency.DAILY), confirmed=False, now=MONDAY_0900
        )
    kept = store.find_subscriber("a@example.org")
    assert (kept.frequency, kept.status) == (Frequency.WEEKLY, SubscriberStatus.ACTIVE)


def test_an_address_in_another_case_is_the_known_reader_and_keeps_its_first_spelling(
    store: Store,
) -> None:
    store.add_subscriber(reader("Reader@example.org"), confirmed=True, now=WEEK_BEFORE)
    with pytest.raises(
        DuplicateSubscriber, match=r"^reader@example\.org is already subscribed as Reader@"
    ):
        store.add_subscriber(reader("reader@example.org"), confirmed=True, now=MONDAY_0900)
    known = store.add_subscribers(
        [reader("READER@example.org"), reader("new@example.org"), reader("NEW@example.org")],
        confirmed=True,
        now=MONDAY_0900,
    )
    assert known == {
        "READER@example.org": "READER@example.org is already subscribed as Reader@example.org",
        "NEW@example.org": "NEW@example.org is already subscribed as new@example.org",
    }
    assert sorted(s.email for s in store.subscribers()) == ["Reader@example.org", "new@example.org"]
    assert store.find_subscriber("rEADER@example.org").email == "Reader@example.org"


def test_a_sign_up_in_another_case_is_the_same_reader_by_the_databases_unique_key(
    store: Store,
) -> None:
    # sign_up inserts first and lets the unique key decide, so this is the path two racing
    # sign-ups take: only the database can tell that the second spelling is the same reader.
    first = store.sign_up(reader("Mia@example.org"), WEEK_BEFORE)
    again = store.sign_up(reader("MIA@example.org", Frequency.DAILY), MONDAY_0900)
    assert (again.subscriber_id, again.email, again.confirm) == (
        first.subscriber_id,
        "Mia@example.org",
        True,
    )
    mia = store.find_subscriber("mia@example.org")
    assert (mia.email, mia.frequency) == ("Mia@example.org", Frequency.DAILY)
    assert store.activate(again.subscriber_id, again.token_version, MONDAY_0900)
    active = store.sign_up(reader("mia@EXAMPLE.org"), MONDAY_0900)
    assert (active.subscriber_id, active.email, active.confirm) == (
        first.subscriber_id,
        "Mia@example.org",
        False,
    )
    assert len(list(store.subscribers())) == 1


def test_of_two_confirmations_only_the_first_activates_even_at_once(store: Store) -> None:
    # At the same instant, so that nothing but the reader's status before can tell them apart.
    signup = store.sign_up(reader("twice@example.org"), WEEK_BEFORE)
    first = store.activate(signup.subscriber_id, signup.token_version, MONDAY_0900)
    again = store.activate(signup.subscriber_id, signup.token_version, MONDAY_0900)
    assert first is not None and again is not None
    assert (first.first, again.first) == (True, False)
    assert first.reader == again.reader
    # Two clicks racing each other: one of them finds the reader pending, never both.
    for n in range(5):
        racing = store.sign_up(reader(f"race{n}@example.org"), WEEK_BEFORE)
        start = threading.Barrier(2)

        def click(racing: Signup = racing, start: threading.Barrier = start) -> bool:
            start.wait()
            activation = store.activate(racing.subscriber_id, racing.token_version, MONDAY_0900)
            assert activation is not None
            return activation.first

        with ThreadPoolExecutor(2) as pool:
            clicks = [pool.submit(click) for _ in range(2)]
            assert sorted(c.result() for c in clicks) == [False, True]


def test_remove_preview_and_a_run_for_one_address_find_the_reader_whatever_the_case(
    store: Store,
    ledger: Ledger,
) -> None:
    seed(store, "Reader@example.org", "other@example.org")
    ledger.plan(MONDAY_0900, RULES, Only(email="READER@EXAMPLE.ORG"))
    assert statuses(ledger, "reader@example.org") == [DeliveryStatus.PENDING]
    assert statuses(ledger, "other@example.org") == []
    claims = ledger.claim("w1", MONDAY_0900, LEASE, 10, Only(email="reader@example.org"))
    assert [c.email for c in claims] == ["Reader@example.org"]
    assert ledger.remove_subscriber("rEaDeR@example.org") == "Reader@example.org"
    assert [s.email for s in store.subscribers()] == ["other@example.org"]


def test_new_confirmed_reader_starts_after_the_newest_article(store: Store) -> None:
    store.upsert_articles([article(1), article(2)], WEEK_BEFORE)
    store.add_subscriber(reader("a@example.org"), confirmed=True, now=WEEK_BEFORE)
    assert store.find_subscriber("a@example.org").cursor == store.newest_seq(WEEK_BEFORE)


def test_remove_erases_the_reader_and_their_deliveries(store: Store, ledger: Ledger) -> None:
    seed(store, "a@example.org", "b@example.org")
    ledger.plan(MONDAY_0900, RULES)
    ledger.remove_subscriber("a@example.org")
    with pytest.raises(NotFound):
        store.find_subscriber("a@example.org")
    assert deliveries_of(ledger.engine, "a@example.org") == []
    assert ledger.delivery_counts() == {DeliveryStatus.PENDING: 1}
    with pytest.raises(NotFound):
        ledger.remove_subscriber("a@example.org")


def test_subscribers_stream_in_keyset_batches_and_filter_by_status(store: Store) -> None:
    seed(store, *[f"r{n}@example.org" for n in range(5)])
    store.add_subscriber(reader("p@example.org"), confirmed=False, now=WEEK_BEFORE)
    assert len(list(store.subscribers(batch=2))) == 6
    pending = list(store.subscribers(SubscriberStatus.PENDING, batch=2))
    assert [s.email for s in pending] == ["p@example.org"]


def test_extending_a_lease_keeps_claims_ours_and_never_takes_back_a_lost_one(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "a@example.org", "b@example.org")
    ledger.plan(MONDAY_0900, RULES)
    claims = claim_all(ledger, "w1")
    later = MONDAY_0900 + LEASE - timedelta(minutes=1)
    assert ledger.extend_lease("w1", claims, later + LEASE) == {c.delivery_id for c in claims}
    assert claim_all(ledger, "w2", now=MONDAY_0900 + LEASE + timedelta(minutes=1)) == []
    stolen = claim_all(ledger, "w2", now=later + LEASE + timedelta(seconds=1))
    assert len(stolen) == 2
    assert ledger.extend_lease("w1", claims, later + 2 * LEASE) == set()


def test_a_paused_reader_gets_nothing_then_one_catch_up_with_all_they_missed(
    store: Store, ledger: Ledger
) -> None:
    seed(store, "paused@example.org", "other@example.org", articles=2)
    paused = store.find_subscriber("paused@example.org")
    # Paused until Wednesday 16 December: the Mondays 30 November and 7 and 14 December pass by.
    until = datetime(2026, 12, 16, tzinfo=UTC)
    assert store.pause(paused.id, paused.token_version, until) == replace(
        paused, paused_until=until
    )
    week = timedelta(days=7)
    for monday in (MONDAY_0900, MONDAY_0900 + week, MONDAY_0900 + 2 * week):
        store.upsert_articles([article(int(monday.timestamp()))], monday - timedelta(hours=2))
        ledger.plan(monday, RULES)
        sent = claim_all(ledger, now=monday)
        assert [c.email for c in sent] == ["other@example.org"]
        ledger.record("w1", monday, sent, [], FINISH)
    # No row for the slots the pause covered, and the reader as they were: cursor and anchor.
    assert deliveries_of(ledger.engine, "paused@example.org") == []
    assert store.find_subscriber("paused@example.org") == replace(paused, paused_until=until)
    # Monday 21 December, one hour late: one digest, with every article since the pause began.
    late = MONDAY_0900 + 3 * week + timedelta(hours=1)
    ledger.plan(late, RULES)
    sent = claim_all(ledger, now=late)
    (catch_up,) = [c for c in sent if c.email == "paused@example.org"]
    assert catch_up.period_key == "2026-W52"
    assert len(store.articles(catch_up.cursor_from, catch_up.cursor_to)) == 2 + 3
    ledger.record("w1", late, sent, [], FINISH)
    ledger.plan(late + timedelta(hours=2), RULES)
    assert statuses(ledger, "paused@example.org") == [DeliveryStatus.SENT]


def test_a_pause_is_ended_by_none_and_leaves_a_stopped_reader_alone(store: Store) -> None:
    seed(store, "a@example.org", "gone@example.org")
    a, gone = (store.find_subscriber(e) for e in ("a@example.org", "gone@example.org"))
    until = datetime(2026, 12, 16, tzinfo=UTC)
    store.pause(a.id, a.token_version, until)
    assert store.paused_count(MONDAY_0900) == 1
    assert store.paused_count(until) == 0  # over at its very instant
    store.unsubscribe(gone.id, gone.token_version, MONDAY_0900)
    changed = store.pause(gone.id, gone.token_version, until)
    assert changed is not None and changed.paused_until is None
    assert store.pause(a.id, a.token_version + 1, None) is None  # an old link: nothing
    resumed = store.pause(a.id, a.token_version, None)
    assert resumed is not None and resumed.paused_until is None


def test_a_reader_who_left_while_paused_comes_back_unpaused_and_a_pending_one_cannot_pause(
    store: Store,
) -> None:
    seed(store, "back@example.org")
    left = store.find_subscriber("back@example.org")
    store.pause(left.id, left.token_version, datetime(2027, 6, 1, tzinfo=UTC))
    store.unsubscribe(left.id, left.token_version, MONDAY_0900)
    signup = store.sign_up(reader("back@example.org"), MONDAY_0900)
    # Signing up again drops the old pause, and while pending no new one is taken.
    pending = store.pause(
        signup.subscriber_id, signup.token_version, datetime(2027, 7, 1, tzinfo=UTC)
    )
    assert pending is not None and pending.paused_until is None
    activation = store.activate(signup.subscriber_id, signup.token_version, MONDAY_0900)
    assert activation is not None and activation.reader.paused_until is None
