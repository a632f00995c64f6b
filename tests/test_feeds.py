"""Feed polling: good feeds import while a broken one is logged, recorded and retried next poll."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cli_fixtures import Cli
from feed_server import ChangingFeed

from digest import reports
from digest.app import Services
from digest.config import load
from digest.domain import Validators
from digest.feeds import FeedPoller
from digest.ledger import Ledger
from digest.metrics import Metrics, Sources
from digest.store import Store

NOW = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def json_feed(folder: Path, *titles: str) -> str:
    path = folder / "feed.json"
    entries = [
        {"url": f"https://miasfeed.example/{n}", "title": title, "summary": "A study."}
        for n, title in enumerate(titles)
    ]
    path.write_text(json.dumps(entries))
    return str(path)


def poll(store: Store, feeds: list[str], clock: Clock) -> None:
    asyncio.run(FeedPoller(store, feeds, clock).poll())


def test_a_broken_feed_is_recorded_and_the_other_feeds_still_import(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = json_feed(tmp_path, "Sleep and the heart", "Walking after meals")
    broken = tmp_path / "broken.xml"
    broken.write_text("<rss><channel><item><title>cut off")
    missing = str(tmp_path / "gone.json")
    caplog.set_level(logging.INFO, logger="digest.feeds")

    poll(store, [str(broken), good, missing], Clock(NOW))

    assert [a.title for a in store.recent_articles(10)] == [
        "Walking after meals",
        "Sleep and the heart",
    ]
    states = store.feed_states([str(broken), good, missing])
    assert states[good].failing_since is None
    assert states[good].ok_at == NOW
    assert states[str(broken)].failing_since == NOW
    assert "malformed XML" in (states[str(broken)].last_error or "")
    assert states[missing].failures == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(str(broken) in w and "malformed XML" in w for w in warnings)
    assert any(missing in w and "No such file" in w for w in warnings)
    assert any("added 2, updated 0, skipped 0" in r.getMessage() for r in caplog.records)


def test_a_failure_streak_keeps_its_start_and_a_success_ends_it(
    store: Store, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.json"
    clock = Clock(NOW)
    for hours in (0, 1, 2):
        clock.now = NOW + timedelta(hours=hours)
        poll(store, [str(feed)], clock)  # the file is not there yet
    state = store.feed_states([str(feed)])[str(feed)]
    assert (state.failing_since, state.failures, state.errors_total) == (NOW, 3, 3)

    json_feed(tmp_path, "Back again")
    clock.now = NOW + timedelta(hours=3)
    poll(store, [str(feed)], clock)
    state = store.feed_states([str(feed)])[str(feed)]
    assert (state.failing_since, state.failures, state.last_error) == (None, 0, None)
    assert state.errors_total == 3  # the counter behind the metric never goes down
    assert state.ok_at == clock.now


def test_re_polling_a_feed_updates_its_articles_without_duplicating_them(
    store: Store, tmp_path: Path
) -> None:
    feed = json_feed(tmp_path, "First title")
    poll(store, [feed], Clock(NOW))
    json_feed(tmp_path, "Corrected title")
    poll(store, [feed], Clock(NOW + timedelta(minutes=15)))
    assert [a.title for a in store.recent_articles(10)] == ["Corrected title"]


def test_a_poll_that_added_articles_logs_one_info_line_and_a_poll_with_nothing_new_none(
    store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    feed = json_feed(tmp_path, "Sleep and the heart")
    caplog.set_level(logging.INFO)
    poll(store, [feed], Clock(NOW))
    assert [r.getMessage() for r in caplog.records] == [
        f"feed {feed}: added 1, updated 0, skipped 0"
    ]
    caplog.clear()
    poll(store, [feed], Clock(NOW + timedelta(minutes=15)))
    assert caplog.records == []


def test_logs_name_a_failing_feed_without_its_credentials(
    store: Store, http_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret_url = http_base.replace("http://", "http://reader:hunter2@") + "/broken?token=s3cret"
    caplog.set_level(logging.INFO, logger="digest.feeds")
    poll(store, [secret_url], Clock(NOW))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"{http_base}/broken?..." in logged
    assert "HTTP 500" in logged
    assert "hunter2" not in logged
    assert "s3cret" not in logged


def test_credentials_in_a_feed_url_are_sent_as_basic_auth_and_kept_out_of_logs(
    store: Store, http_base: str, caplog: pytest.LogCaptureFixture
) -> None:
    private = http_base.replace("http://", "http://reader:hunter2@") + "/private"
    wrong = http_base.replace("http://", "http://reader:guess@") + "/private"
    caplog.set_level(logging.INFO, logger="digest.feeds")
    poll(store, [private, wrong], Clock(NOW))
    states = store.feed_states([private, wrong])
    assert states[private].failing_since is None
    assert store.recent_articles(1)
    assert "HTTP 401" in (states[wrong].last_error or "")
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"feed {http_base}/private: added" in logged
    assert "hunter2" not in logged
    assert "guess" not in logged


def services_with_feeds(store: Store, feeds: list[str]) -> Services:
    settings = load(None, {"DIGEST_FEEDS": ",".join(feeds), "DIGEST_DATABASE_URL": "sqlite://"})
    return Services(settings, store)


def test_status_reports_a_feed_failing_for_a_day(store: Store, tmp_path: Path) -> None:
    good = json_feed(tmp_path, "Sleep and the heart")
    missing = str(tmp_path / "gone.json")
    services = services_with_feeds(store, [good, missing])
    clock = Clock(NOW)
    poll(store, [good, missing], clock)

    shown = reports.status(services, NOW + timedelta(hours=23))
    assert f"{good}: ok, last polled 2026-11-24 06:00 UTC" in shown
    assert f"{missing}: failing since 2026-11-24 06:00 UTC, 1 poll(s) in a row" in shown

    clock.now = NOW + timedelta(days=1)
    poll(store, [missing], clock)
    shown = reports.status(services, clock.now)
    assert f"{missing}: FAILING FOR OVER A DAY since 2026-11-24 06:00 UTC, 2 poll(s)" in shown


def test_status_says_which_feeds_were_never_polled(store: Store) -> None:
    shown = reports.status(services_with_feeds(store, ["https://miasfeed.example/rss"]), NOW)
    assert "https://miasfeed.example/rss: not polled yet" in shown


def test_metrics_count_feed_poll_errors_per_feed(store: Store, tmp_path: Path) -> None:
    good = json_feed(tmp_path, "Sleep and the heart")
    missing = str(tmp_path / "gone.json")
    clock = Clock(NOW)
    for _ in range(2):
        poll(store, [good, missing], clock)
    services = services_with_feeds(store, [good, missing])
    text = (
        Metrics(Sources(Ledger(store), store, clock, [good, missing], services.feedback))
        .render()
        .decode()
    )
    assert f'digest_feed_poll_errors_total{{feed="{missing}"}} 2.0' in text
    assert f'digest_feed_poll_errors_total{{feed="{good}"}} 0.0' in text
    assert f'digest_feed_failing{{feed="{missing}"}} 1.0' in text
    assert f'digest_feed_failing{{feed="{good}"}} 0.0' in text


# --- conditional polls --------------------------------------------------------------------------

FIRST = [{"url": "https://miasfeed.example/a", "title": "First title"}]
CORRECTED = [{"url": "https://miasfeed.example/a", "title": "Corrected title"}]
LAST_MODIFIED = "Tue, 24 Nov 2026 05:00:00 GMT"


@pytest.mark.parametrize(
    ("etag", "last_modified", "sent_back"),
    [
        ('"v1"', LAST_MODIFIED, {"If-None-Match": '"v1"', "If-Modified-Since": LAST_MODIFIED}),
        ('"v1"', None, {"If-None-Match": '"v1"'}),
        (None, LAST_MODIFIED, {"If-Modified-Since": LAST_MODIFIED}),
    ],
)
def test_an_unchanged_feed_costs_a_304_that_imports_nothing_and_counts_as_ok(
    store: Store,
    http_base: str,
    changing_feed: ChangingFeed,
    caplog: pytest.LogCaptureFixture,
    etag: str | None,
    last_modified: str | None,
    sent_back: dict[str, str],
) -> None:
    feed = f"{http_base}/changing"
    changing_feed.etag, changing_feed.last_modified = etag, last_modified
    changing_feed.body = json.dumps(FIRST).encode()
    clock = Clock(NOW)
    poll(store, [feed], clock)
    # The server now lies: a new body, the same validators. Only a 304 keeps the old title.
    changing_feed.body = json.dumps(CORRECTED).encode()
    clock.now = NOW + timedelta(minutes=15)
    caplog.set_level(logging.DEBUG, logger="digest.feeds")
    poll(store, [feed], clock)

    assert changing_feed.asked == [{}, sent_back]
    assert [a.title for a in store.recent_articles(10)] == ["First title"]
    state = store.feed_states([feed])[feed]
    assert (state.ok_at, state.polled_at, state.failures) == (clock.now, clock.now, 0)
    assert state.validators == Validators(etag, last_modified)
    # An idle poll: one line, below INFO.
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, f"feed {feed}: unchanged since the last poll (HTTP 304)")
    ]


def test_a_feed_with_a_new_etag_is_imported_and_its_new_validators_kept(
    store: Store, http_base: str, changing_feed: ChangingFeed
) -> None:
    feed = f"{http_base}/changing"
    changing_feed.body = json.dumps(FIRST).encode()
    clock = Clock(NOW)
    poll(store, [feed], clock)
    changing_feed.body = json.dumps(CORRECTED).encode()
    changing_feed.etag = '"v2"'
    changing_feed.last_modified = "Tue, 24 Nov 2026 06:10:00 GMT"
    for minutes in (15, 30):
        clock.now = NOW + timedelta(minutes=minutes)
        poll(store, [feed], clock)

    assert [a.title for a in store.recent_articles(10)] == ["Corrected title"]
    assert [asked.get("If-None-Match") for asked in changing_feed.asked] == [None, '"v1"', '"v2"']
    state = store.feed_states([feed])[feed]
    assert state.validators == Validators('"v2"', "Tue, 24 Nov 2026 06:10:00 GMT")


def test_a_failed_poll_keeps_the_validators_and_a_304_after_it_ends_the_failure_streak(
    store: Store, http_base: str, changing_feed: ChangingFeed
) -> None:
    feed = f"{http_base}/changing"
    clock = Clock(NOW)
    poll(store, [feed], clock)
    changing_feed.status = 503
    clock.now = NOW + timedelta(minutes=15)
    poll(store, [feed], clock)
    assert store.feed_states([feed])[feed].failing_since == clock.now

    changing_feed.status = 200
    clock.now = NOW + timedelta(minutes=30)
    poll(store, [feed], clock)

    assert changing_feed.asked[2] == {"If-None-Match": '"v1"', "If-Modified-Since": LAST_MODIFIED}
    state = store.feed_states([feed])[feed]
    assert (state.ok_at, state.failing_since, state.failures) == (clock.now, None, 0)
    assert state.errors_total == 1


def test_a_feed_that_could_not_be_parsed_is_asked_for_whole_on_the_next_poll(
    store: Store, http_base: str, changing_feed: ChangingFeed
) -> None:
    feed = f"{http_base}/changing"
    changing_feed.body = b"<rss><channel><item><title>cut off"
    clock = Clock(NOW)
    poll(store, [feed], clock)
    assert store.feed_states([feed])[feed].validators == Validators()

    changing_feed.body = json.dumps(FIRST).encode()  # fixed, under the same ETag
    clock.now = NOW + timedelta(minutes=15)
    poll(store, [feed], clock)

    assert changing_feed.asked == [{}, {}]
    assert [a.title for a in store.recent_articles(10)] == ["First title"]


@pytest.mark.parametrize("etag", ['"' + "x" * 300 + '"', '"caf\xe9"'])
def test_an_etag_too_long_or_not_ascii_is_not_kept_and_last_modified_is_sent_alone(
    store: Store, http_base: str, changing_feed: ChangingFeed, etag: str
) -> None:
    feed = f"{http_base}/changing"
    changing_feed.etag = etag
    poll(store, [feed], Clock(NOW))
    poll(store, [feed], Clock(NOW + timedelta(minutes=15)))
    assert changing_feed.asked[1] == {"If-Modified-Since": LAST_MODIFIED}
    assert store.feed_states([feed])[feed].validators == Validators(None, LAST_MODIFIED)


def test_articles_import_reads_the_whole_feed_without_the_polls_validators(
    store: Store, upgraded: Cli, http_base: str, changing_feed: ChangingFeed
) -> None:
    feed = f"{http_base}/changing"
    changing_feed.body = json.dumps(FIRST).encode()
    poll(store, [feed], Clock(NOW))
    changing_feed.body = json.dumps(CORRECTED).encode()  # under the same ETag

    result = upgraded("articles", "import", feed, "--now", NOW.isoformat())

    assert result.code == 0, result
    assert "updated 1" in result.out
    assert changing_feed.asked[1] == {}
    assert "Corrected title" in upgraded("articles", "list").out


# --- relative links -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/news/relative.xml?token=s3cret", "/old/feed?token=s3cret"])
def test_relative_links_resolve_against_the_final_feed_url_without_its_credentials(
    store: Store, http_base: str, path: str
) -> None:
    feed = http_base.replace("http://", "http://reader:hunter2@") + path
    poll(store, [feed], Clock(NOW))
    articles = {a.title: a for a in store.recent_articles(10)}
    assert articles["Beside the feed"].url == f"{http_base}/news/sleep-and-the-heart"
    assert f'href="{http_base}/news/studies/42"' in articles["Beside the feed"].summary
    assert articles["From the site's root"].url == f"{http_base}/articles/walking"
    assert len(articles) == 3  # the javascript: link is still refused
