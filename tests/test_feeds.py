"""Feed polling: good feeds import while a broken one is logged, recorded and retried next poll."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from digest import reports
from digest.app import Services
from digest.config import load
from digest.feeds import FeedPoller
from digest.metrics import Metrics
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
    text = Metrics(store, clock, [good, missing]).render().decode()
    assert f'digest_feed_poll_errors_total{{feed="{missing}"}} 2.0' in text
    assert f'digest_feed_poll_errors_total{{feed="{good}"}} 0.0' in text
    assert f'digest_feed_failing{{feed="{missing}"}} 1.0' in text
    assert f'digest_feed_failing{{feed="{good}"}} 0.0' in text
