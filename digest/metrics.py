"""Prometheus text for `GET /metrics`, read from the ledger at scrape time.

Reading the tables rather than counting in memory keeps the numbers right across restarts and
across several daemons sharing one database.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from digest.domain import Clock, Feedback, NoticeKind
from digest.ledger import Ledger
from digest.store import Store
from digest.text import display_name


@dataclass(frozen=True, slots=True)
class Sources:
    """What the metrics are read from at each scrape."""

    ledger: Ledger
    store: Store
    clock: Clock
    feeds: Sequence[str]
    feedback: Callable[[datetime], Feedback]  # what came back, as of an instant


class _LedgerCollector(Collector):
    def __init__(self, sources: Sources) -> None:
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "digest_deliveries",
            "Digests in the ledger by status (sent, failed, pending retries...) and frequency",
            labels=["status", "frequency"],
        )
        for (status, frequency), count in sorted(
            self._sources.ledger.delivery_counts_by_frequency().items()
        ):
            deliveries.add_metric([status.value, frequency.value], count)
        yield deliveries
        yield GaugeMetricFamily(
            "digest_due_backlog",
            "Deliveries that are due and not yet claimed",
            value=self._sources.ledger.count_claimable(self._sources.clock()),
        )
        runs = self._sources.ledger.last_runs(1)
        if runs:
            run = runs[0]
            yield GaugeMetricFamily(
                "digest_last_run_timestamp_seconds",
                "When the last dispatch run finished",
                value=run.finished_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "digest_last_run_duration_seconds",
                "How long the last dispatch run took",
                value=(run.finished_at - run.started_at).total_seconds(),
            )
        yield from self._feed_metrics()
        yield from self._feedback_metrics()

    def _feedback_metrics(self) -> Iterator[Metric]:
        feedback = self._sources.feedback(self._sources.clock())
        notices = GaugeMetricFamily(
            "digest_notices_7d",
            "Bounces, delays, complaints and mailto unsubscribes taken over the last 7 days",
            labels=["kind"],
        )
        rates = GaugeMetricFamily(
            "digest_feedback_rate_7d",
            "Bounces and complaints over the last 7 days per digest sent in them",
            labels=["kind"],
        )
        for kind in NoticeKind:
            notices.add_metric([kind.value], feedback.counts.get(kind, 0))
        for kind in (NoticeKind.BOUNCE, NoticeKind.COMPLAINT):
            rates.add_metric([kind.value], feedback.rate(kind))
        yield notices
        yield rates
        yield GaugeMetricFamily(
            "digest_sent_7d", "Digests sent over the last 7 days", value=feedback.sent
        )

    def _feed_metrics(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "digest_feed_poll_errors", "Failed polls of each feed, ever", labels=["feed"]
        )
        failing = GaugeMetricFamily(
            "digest_feed_failing", "1 while the feed's latest poll failed", labels=["feed"]
        )
        states = self._sources.store.feed_states(self._sources.feeds)
        for source in self._sources.feeds:
            state, name = states.get(source), display_name(source)
            errors.add_metric([name], state.errors_total if state else 0)
            failing.add_metric([name], int(state is not None and state.failures > 0))
        yield errors
        yield failing


class Metrics:
    def __init__(self, sources: Sources) -> None:
        self._registry = CollectorRegistry()
        self._registry.register(_LedgerCollector(sources))

    def render(self) -> bytes:
        return generate_latest(self._registry)
