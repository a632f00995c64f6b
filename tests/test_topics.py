"""Topics (issue 15, item 1): a reader's chosen categories, written through the CLI, honoured by
planning and rendering, and shown by status. On SQLite and PostgreSQL, through the entry point."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from cli_fixtures import CONFIRMED, MONDAY_0900, Cli, five_articles
from smtp_server import SmtpServer
from sqlalchemy import text
from test_claims import statements_sent
from test_cli import parsed, plain_text

from digest import database
from digest import store as store_module
from digest.domain import (
    ArticleDraft,
    Claim,
    Frequency,
    Schedule,
    Subscriber,
    SubscriberDraft,
)
from digest.ledger import FinishRules, Ledger, PlanRules
from digest.store import Store

NEXT_MONDAY = "2026-12-07T09:00Z"


def topics_of(database_url: str, email: str) -> frozenset[str] | None:
    engine = database.connect(database_url)
    try:
        return Store(engine).find_subscriber(email).topics
    finally:
        engine.dispose()


def add(cli: Cli, email: str, *options: str) -> None:
    result = cli(
        "subscribers", "add", email, "--frequency", "weekly", "--confirmed", "--now", CONFIRMED,
        *options,
    )  # fmt: skip
    assert result.code == 0, result.err


def choose_topics(store: Store, email: str, topics: frozenset[str] | None) -> Subscriber | None:
    """Save a reader's topics as the preferences page does, their other choices as they are."""
    reader = store.find_subscriber(email)
    return store.set_preferences(
        reader.id,
        reader.token_version,
        reader.frequency,
        reader.timezone,
        send_time=reader.send_time,
        send_weekday=reader.send_weekday,
        topics=topics,
    )


def texts_by_reader(smtp_server: SmtpServer) -> dict[str, str]:
    return {m.recipients[0]: plain_text(parsed(m.data)) for m in smtp_server.messages}


def test_subscribers_add_keeps_topic_keys_and_refuses_an_empty_or_overlong_topic_in_one_line(
    upgraded: Cli, database_url: str
) -> None:
    result = upgraded(
        "subscribers", "add", "a@example.org", "--topics", "Nutrition,  MEDICAL news & Research "
    )
    assert result.code == 0, result.err
    assert "medical news and research, nutrition" in result.out
    assert topics_of(database_url, "a@example.org") == frozenset(
        {"nutrition", "medical news and research"}
    )
    assert upgraded("subscribers", "add", "b@example.org").code == 0
    assert topics_of(database_url, "b@example.org") is None  # every topic, later ones too
    for bad in ("Nutrition,,Sleep", "!!!", "x" * 81):
        refused = upgraded("subscribers", "add", "c@example.org", "--topics", bad)
        assert refused.code == 2
        assert len(refused.err.strip().splitlines()) == 1
        assert "bad topic" in refused.err
        assert "Traceback" not in refused.err
    assert upgraded("subscribers", "list").out.count("c@example.org") == 0


def test_subscribers_import_reads_a_topics_column_and_reports_a_bad_topic_by_line(
    upgraded: Cli, database_url: str, tmp_path: Path
) -> None:
    csv = tmp_path / "readers.csv"
    csv.write_text(
        "email,frequency,timezone,topics\n"
        'chosen@example.org,weekly,UTC,"Public Health, Nutrition"\n'
        "everything@example.org,weekly,UTC,\n"
        'bad@example.org,weekly,UTC,"Nutrition,,"\n'
        "short@example.org,daily\n"
    )
    result = upgraded("subscribers", "import", str(csv), "--confirmed")
    assert result.code == 1
    assert "line 4:" in result.err and "bad topic" in result.err
    assert result.out.strip().endswith("imported 3, already subscribed 0, bad rows 1")
    assert topics_of(database_url, "chosen@example.org") == frozenset(
        {"public health", "nutrition"}
    )
    assert topics_of(database_url, "everything@example.org") is None
    assert topics_of(database_url, "short@example.org") is None


def test_a_digest_holds_only_the_readers_topics_and_and_n_more_counts_only_theirs(
    upgraded: Cli, smtp_server: SmtpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(upgraded, "nutrition@example.org", "--topics", "nutrition")
    add(upgraded, "everything@example.org")
    # Articles 0 to 9: the even ones are Nutrition, the odd ones Medical News & Research.
    imported = upgraded("articles", "import", str(five_articles(tmp_path, count=10)))
    assert imported.code == 0, imported.err
    monkeypatch.setenv("DIGEST_MAX_ARTICLES", "2")
    result = upgraded("send", "--now", MONDAY_0900)
    assert result.last_line == "sent 2, skipped 0, retrying 0, failed 0"
    texts = texts_by_reader(smtp_server)
    nutrition = texts["nutrition@example.org"]
    assert "Study 1:" not in nutrition and "Study 3:" not in nutrition
    assert "and 3 more on the site" in nutrition  # 5 in their topics, 2 shown
    assert "and 8 more on the site" in texts["everything@example.org"]


def test_a_window_with_nothing_in_the_readers_topics_is_skipped_and_their_cursor_moves_on(
    upgraded: Cli, smtp_server: SmtpServer, tmp_path: Path, database_url: str
) -> None:
    add(upgraded, "sleep@example.org", "--topics", "Sleep")  # no article has it yet
    add(upgraded, "everything@example.org")
    assert upgraded("articles", "import", str(five_articles(tmp_path))).code == 0
    result = upgraded("send", "--now", MONDAY_0900)
    assert result.last_line == "sent 1, skipped 1, retrying 0, failed 0"
    assert [m.recipients for m in smtp_server.messages] == [["everything@example.org"]]
    # They choose Nutrition now: the next digest holds the Nutrition article published since,
    # not the ones of the window they skipped.
    engine = database.connect(database_url)
    store = Store(engine)
    assert choose_topics(store, "sleep@example.org", frozenset({"nutrition"}))
    engine.dispose()
    assert upgraded("articles", "import", str(five_articles(tmp_path, start=10, count=1))).code == 0
    assert upgraded("send", "--now", NEXT_MONDAY).code == 0
    assert len(smtp_server.messages) == 3
    latest = texts_by_reader(smtp_server)["sleep@example.org"]
    assert "Study 10:" in latest
    assert "Study 0:" not in latest and "Study 2:" not in latest


def test_status_shows_the_topic_mix_of_active_readers(upgraded: Cli) -> None:
    add(upgraded, "a@example.org", "--topics", "Nutrition")
    add(upgraded, "b@example.org", "--topics", "nutrition")
    add(upgraded, "c@example.org")
    shown = upgraded("status", "--now", MONDAY_0900)
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    topics = lines.index("Topics (active readers)")
    assert [line.split() for line in lines[topics + 1 : topics + 3]] == [
        ["2", "nutrition"],
        ["1", "every", "topic"],
    ]


def plan_readers(store: Store, count: int) -> tuple[int, list[Claim]]:
    """Plan `count` weekly readers, a third of them each of every topic, Nutrition, Sleep; return
    the statements planning sent and the claims of the readers it made pending."""
    drafts = [
        SubscriberDraft(f"r{n}@example.org", Frequency.WEEKLY, "UTC", topics=TOPIC_SETS[n % 3])
        for n in range(count)
    ]
    store.add_subscribers(drafts, confirmed=True, now=MONDAY - timedelta(days=7))
    publish_two(store)
    ledger = Ledger(store)
    with statements_sent(store.engine) as sent:
        planned = ledger.plan(MONDAY, PlanRules(Schedule(), None, 100, "example.org"))
    assert planned.skipped == count // 3  # the Sleep readers: nothing in their topics
    return len(sent), ledger.claim("w", MONDAY, timedelta(minutes=5), count)


def publish_two(store: Store) -> None:
    """A Nutrition article and a Public Health one, the day before MONDAY."""
    news = [
        ArticleDraft(
            url=f"https://miasfeed.example/articles/{category}",
            title=category,
            summary="Findings.",
            category=category,
            reading_minutes=2,
            published_at=MONDAY - timedelta(days=1),
        )
        for category in ("NUTRITION", "Public Health")
    ]
    store.upsert_articles(news, MONDAY - timedelta(days=1))


TOPIC_SETS = (None, frozenset({"nutrition"}), frozenset({"sleep"}))
MONDAY = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_planning_sends_as_many_statements_for_many_readers_as_for_few_and_claims_carry_topics(
    store: Store,
) -> None:
    few, _ = plan_readers(store, 6)
    engine = store.engine
    with engine.begin() as conn:
        for table in ("deliveries", "subscribers", "articles"):
            conn.execute(text(f"DELETE FROM {table}"))
    many, claims = plan_readers(store, 300)
    assert many == few  # one group per topic set, not one query per reader
    assert len(claims) == 200
    assert {c.topics for c in claims} == {None, frozenset({"nutrition"})}
    sleeper = store.find_subscriber("r2@example.org")
    assert sleeper.cursor == store.newest_seq(MONDAY)  # moved past what they did not want


def test_a_digests_topics_are_fixed_at_planning_for_its_retries_web_version_and_count(
    store: Store,
) -> None:
    publish_two(store)
    store.add_subscribers(
        [
            SubscriberDraft(
                "n@example.org", Frequency.WEEKLY, "UTC", topics=frozenset({"nutrition"})
            )
        ],
        confirmed=False,
        now=MONDAY - timedelta(days=7),
    )
    engine = store.engine
    with engine.begin() as conn:  # confirmed before both articles
        conn.execute(text("UPDATE subscribers SET status = 'active', cursor = 0"))
    ledger = Ledger(store)
    rules = PlanRules(Schedule(), None, 100, "example.org")
    ledger.plan(MONDAY, rules)
    reader = store.find_subscriber("n@example.org")
    choose_topics(store, "n@example.org", None)  # everything, after planning
    (claim,) = ledger.claim("w", MONDAY, timedelta(minutes=5), 10)
    assert claim.topics == frozenset({"nutrition"})
    ledger.record("w", MONDAY, [claim], [], FINISH)
    (sent,) = ledger.history(reader.id, 10)
    assert (sent.topics, sent.articles) == (frozenset({"nutrition"}), 1)
    assert store.find_subscriber("n@example.org").topics is None


FINISH = FinishRules(3, timedelta(minutes=1), timedelta(hours=1), 3)


def test_preview_and_status_count_as_news_only_articles_in_the_readers_topics(
    upgraded: Cli, tmp_path: Path
) -> None:
    add(upgraded, "sleep@example.org", "--topics", "Sleep")
    add(upgraded, "nutrition@example.org", "--topics", "Nutrition")
    assert upgraded("articles", "import", str(five_articles(tmp_path))).code == 0
    sleeper = upgraded("preview", "sleep@example.org", "--now", MONDAY_0900)
    assert sleeper.code == 0, sleeper.err
    assert "is due now" not in sleeper.err
    eater = upgraded("preview", "nutrition@example.org", "--now", MONDAY_0900, "--format", "text")
    assert "is due now" in eater.err
    assert "Study 0:" in eater.out and "Study 1:" not in eater.out
    status = upgraded("status", "--now", MONDAY_0900).out
    assert "weekly    due now, 1 reader(s)" in status


def test_a_dry_run_counts_a_reader_with_nothing_in_their_topics_as_skipped(
    upgraded: Cli, smtp_server: SmtpServer, tmp_path: Path
) -> None:
    add(upgraded, "sleep@example.org", "--topics", "Sleep")
    add(upgraded, "nutrition@example.org", "--topics", "Nutrition")
    assert upgraded("articles", "import", str(five_articles(tmp_path))).code == 0
    result = upgraded("send", "--dry-run", "--now", MONDAY_0900)
    assert result.code == 0, result.err
    assert "would send 1, skip 1" in result.out
    assert smtp_server.messages == []


def test_saving_topics_changes_a_signed_up_reader_and_leaves_a_stopped_one_or_an_old_link_alone(
    store: Store,
) -> None:
    drafts = [SubscriberDraft(f"{name}@example.org", Frequency.WEEKLY, "UTC") for name in "ab"]
    store.add_subscribers(drafts, confirmed=True, now=MONDAY)
    a, b = (store.find_subscriber(d.email) for d in drafts)
    changed = choose_topics(store, a.email, frozenset({"sleep", "nutrition"}))
    assert changed is not None and changed.topics == frozenset({"sleep", "nutrition"})
    old_link = store.set_preferences(
        a.id, a.token_version + 1, a.frequency, a.timezone,
        send_time=None, send_weekday=None, topics=None,
    )  # fmt: skip
    assert old_link is None
    store.unsubscribe(b.id, b.token_version, MONDAY)
    stopped = choose_topics(store, b.email, frozenset({"sleep"}))
    assert stopped is not None and stopped.topics is None
    back = choose_topics(store, a.email, None)
    assert back is not None and back.topics is None


def test_planning_queries_each_group_once_whatever_topic_sets_its_readers_hold(
    store: Store,
) -> None:
    # Two groups of one frequency and timezone, each with its own topic set: two INSERTs, not
    # one per group and topic set (four, two of them for nobody).
    drafts = [
        SubscriberDraft(
            "early@example.org", Frequency.WEEKLY, "UTC", time(7), topics=TOPIC_SETS[1]
        ),
        SubscriberDraft("late@example.org", Frequency.WEEKLY, "UTC", topics=TOPIC_SETS[2]),
    ]
    store.add_subscribers(drafts, confirmed=True, now=MONDAY - timedelta(days=7))
    publish_two(store)
    with statements_sent(store.engine) as sent:
        planned = Ledger(store).plan(MONDAY, PlanRules(Schedule(), None, 100, "example.org"))
    assert planned.skipped == 1  # the Sleep reader
    inserts = [sql for sql, _ in sent if sql.lstrip().upper().startswith("INSERT INTO DELIVERIES")]
    assert len(inserts) == 2
    readership = store.readership()
    assert {group.send_time for group in readership.groups} == {time(7), None}
    assert set(readership.topic_sets) == {"nutrition", "sleep"}


@pytest.mark.parametrize("common", [64, 1, 0], ids=["every-set", "one-set", "no-set"])
def test_news_is_the_same_whether_a_readers_topic_set_is_looked_up_once_or_in_their_window(
    store: Store, monkeypatch: pytest.MonkeyPatch, common: int
) -> None:
    # The common topic sets' news comes from one look-up a set, any other's from each reader's
    # window (store.has_news): both say the same, for readers with and without news.
    monkeypatch.setattr(store_module, "COMMON_TOPIC_SETS", common)
    sets = {
        "all": None,
        "nutrition": frozenset({"nutrition"}),
        "health": frozenset({"public health", "sleep"}),
        "sleep": frozenset({"sleep"}),
        "fitness": frozenset({"fitness", "sleep"}),
    }
    drafts = [
        SubscriberDraft(f"{name}{n}@example.org", Frequency.WEEKLY, "UTC", topics=topics)
        for name, topics in sets.items()
        for n in range(1 + (name == "sleep"))  # the most common set: the one looked up first
    ]
    store.add_subscribers(drafts, confirmed=True, now=MONDAY - timedelta(days=7))
    publish_two(store)
    Ledger(store).plan(MONDAY, PlanRules(Schedule(), None, 100, "example.org"))
    with store.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.email, d.status FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id"
            )
        )
        planned = {email: status for email, status in rows}
    assert planned == {
        "all0@example.org": "pending",
        "nutrition0@example.org": "pending",
        "health0@example.org": "pending",
        "sleep0@example.org": "skipped",
        "sleep1@example.org": "skipped",
        "fitness0@example.org": "skipped",
    }
