"""What the CLI shows: the progress bar only on a terminal, and list lines."""

from __future__ import annotations

from datetime import UTC, datetime

from rich.progress import Progress as RichProgress

from digest import reports
from digest.domain import Article


def test_no_progress_bar_when_output_is_not_a_terminal() -> None:
    with reports.progress_bar(enabled=False) as progress:
        assert progress is None


def test_progress_bar_counts_sent_digests_against_the_claimable_total() -> None:
    with reports.progress_bar(enabled=True) as progress:
        assert progress is not None
        progress.start(10)
        progress.advance(4)
        bar = progress._bar  # type: ignore[attr-defined]
        assert isinstance(bar, RichProgress)
        (task,) = bar.tasks
        assert (task.total, task.completed) == (10, 4)


def test_article_line_shows_date_category_reading_time_title_and_url() -> None:
    article = Article(
        seq=1,
        url="https://miasfeed.example/a",
        title="Sleep and the heart",
        summary="",
        category="Medical News & Research",
        reading_minutes=2,
        published_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
    )
    assert reports.article_line(article) == (
        "2026-11-20\tMedical News & Research\t2 min\tSleep and the heart\thttps://miasfeed.example/a"
    )
