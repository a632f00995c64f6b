"""What the CLI shows people: status tables, list lines, the progress bar. Text in, nothing changed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress

from digest.app import Services
from digest.domain import (
    FEEDBACK_DAYS,
    Article,
    DeliveryStatus,
    Feedback,
    Frequency,
    NoticeKind,
    Progress,
    Subscriber,
    SubscriberStatus,
    is_paused,
)
from digest.feeds import failing_too_long
from digest.store import FeedState, Outlook
from digest.text import display_name

RECENT_RUNS = 5


def _when(instant: datetime, zone: str = "UTC") -> str:
    return instant.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def subscriber_line(s: Subscriber, now: datetime) -> str:
    line = f"{s.email}\t{s.frequency}\t{s.status}\t{s.timezone}\tsince {s.created_at:%Y-%m-%d}"
    return line + (f"\t{pause_words(s)}" if is_paused(s.paused_until, now) else "")


def pause_words(s: Subscriber) -> str:
    """How the CLI names a reader's pause, in their own time: "paused until 2026-12-09 00:00 CET"."""
    return (
        "not paused"
        if s.paused_until is None
        else f"paused until {_when(s.paused_until, s.timezone)}"
    )


def article_line(a: Article) -> str:
    return f"{a.published_at:%Y-%m-%d}\t{a.category}\t{a.reading_minutes} min\t{a.title}\t{a.url}"


NO_DIGESTS = {
    SubscriberStatus.PENDING: "is pending confirmation: no digests until they confirm",
    SubscriberStatus.UNSUBSCRIBED: "is unsubscribed: no digests",
    SubscriberStatus.BOUNCED: "is bounced (mail to them kept failing): no digests",
    SubscriberStatus.COMPLAINED: "reported a digest as spam: unsubscribed, no digests",
}


def due_line(services: Services, s: Subscriber, now: datetime, *, news: bool) -> str:
    """When this reader's next digest goes out, as domain.next_digest says."""
    settings = services.settings
    upcoming = s.next_digest(now, settings.schedule, settings.max_lateness, news=news)
    if upcoming is None:
        return f"{s.email} {NO_DIGESTS[s.status]}"
    if upcoming.due_now:
        return f"{s.email} ({s.frequency}, {s.timezone}) is due now, for {upcoming.slot.key}"
    paused = f", {pause_words(s)}" if is_paused(s.paused_until, now) else ""
    return f"{s.email} ({s.frequency}{paused}): next digest {_when(upcoming.slot.at, s.timezone)}"


def _next_digests(groups: list[Outlook]) -> str:
    if not groups:
        return "no active readers"
    parts = []
    if due := sum(o.due_now for o in groups):
        parts.append(f"due now, {due} reader(s)")
    if firsts := [o.first.at for o in groups if o.first is not None]:
        first = min(firsts)
        readers = sum(o.at_first for o in groups if o.first is not None and o.first.at == first)
        parts.append(f"{_when(first)}, {readers} reader(s)")
    return "; then ".join(parts) or "none soon: every reader is paused"


def status(services: Services, now: datetime) -> str:
    facts = services.status(now, RECENT_RUNS)
    counts = facts.readers
    lines = ["Subscribers", f"  {'':10}" + "".join(f"{st.value:>14}" for st in SubscriberStatus)]
    for frequency in Frequency:
        row = "".join(f"{counts.get((frequency, st), 0):>14}" for st in SubscriberStatus)
        lines.append(f"  {frequency.value:10}{row}")
    if facts.paused:
        lines.append(f"  {facts.paused} active reader(s) paused: digest subscribers list")
    if bounced := sum(n for (_, st), n in counts.items() if st is SubscriberStatus.BOUNCED):
        lines.append(
            f"  {bounced} bounced reader(s) get no digests: "
            "digest subscribers list --status bounced"
        )

    lines += ["", "Topics (active readers)", *_topic_lines(facts.topic_mix)]

    lines += ["", "Next digests"]
    for frequency in Frequency:
        groups = [o for g, o in facts.outlook.items() if g.frequency is frequency]
        lines.append(f"  {frequency.value:10}{_next_digests(groups)}")

    deliveries = facts.deliveries
    lines += [
        "",
        "Deliveries",
        "  " + ", ".join(f"{st.value} {deliveries.get(st, 0)}" for st in DeliveryStatus),
        f"  pending retries: {facts.retries}",
        "",
        *_feedback_lines(facts.feedback),
        "",
        "Last runs",
    ]
    lines += [
        f"  {_when(run.started_at)} ({(run.finished_at - run.started_at).total_seconds():.1f} s): "
        f"{run.summary.line()}{'; ' + run.note if run.note else ''}"
        for run in facts.runs
    ] or ["  none yet"]
    return "\n".join(lines + _feed_lines(facts.feeds, services.settings.feed_poll_interval, now))


TOPIC_SETS_SHOWN = 8


def _feedback_lines(feedback: Feedback) -> list[str]:
    """What came back over the last days, by kind, the rates beside the counts, and a warning
    for each rate over its limit."""
    kinds = ", ".join(
        f"{kind.value} {feedback.counts.get(kind, 0)}"
        + (f" ({feedback.rate(kind):.2%})" if kind in RATED else "")
        for kind in NoticeKind
    )
    return [
        f"What came back (last {FEEDBACK_DAYS} days, {feedback.sent} digest(s) sent)",
        f"  {kinds}",
        *(f"  warning: {warning}" for warning in feedback.warnings()),
    ]


RATED = (NoticeKind.BOUNCE, NoticeKind.COMPLAINT)


def _topic_lines(mix: dict[frozenset[str] | None, int]) -> list[str]:
    """Readers per topic set, the largest first; the rest summed in one line."""
    if not mix:
        return ["  no active readers"]
    ranked = sorted(mix.items(), key=lambda item: (-item[1], sorted(item[0] or ())))
    lines = [
        f"  {n:>8}  {'every topic' if topics is None else ', '.join(sorted(topics))}"
        for topics, n in ranked[:TOPIC_SETS_SHOWN]
    ]
    if rest := ranked[TOPIC_SETS_SHOWN:]:
        lines.append(f"  {sum(n for _, n in rest):>8}  in {len(rest)} other topic set(s)")
    return lines


def _feed_lines(
    feeds: list[tuple[str, FeedState | None]], interval: timedelta, now: datetime
) -> list[str]:
    if not feeds:
        return ["", "Feeds", "  none configured (DIGEST_FEEDS)"]
    lines = ["", f"Feeds (polled every {int(interval.total_seconds())} s by digest serve)"]
    for source, state in feeds:
        name = display_name(source)
        if state is None:
            lines.append(f"  {name}: not polled yet")
        elif state.failing_since is None:
            lines.append(f"  {name}: ok, last polled {_when(state.polled_at)}")
        else:
            alarm = "FAILING FOR OVER A DAY" if failing_too_long(state, now) else "failing"
            lines.append(
                f"  {name}: {alarm} since {_when(state.failing_since)}, "
                f"{state.failures} poll(s) in a row: {state.last_error}"
            )
    return lines


class _Bar:
    def __init__(self, bar: RichProgress) -> None:
        self._bar = bar
        self._task = bar.add_task("sending", total=None)

    def start(self, total: int) -> None:
        self._bar.update(self._task, total=total)

    def advance(self, count: int) -> None:
        self._bar.advance(self._task, count)


@contextmanager
def progress_bar(*, enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; nothing at all when output goes to a file or a pipe."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with RichProgress(*columns, transient=True) as bar:
        yield _Bar(bar)
