"""Prometheus text for `GET /metrics`, read from the ledger at scrape time.

Reading the tables rather than counting in memory keeps the numbers right across restarts and
across several daemons sharing one database.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from digest.domain import Clock
from digest.ledger import Ledger
from digest.store import Store
from digest.text import display_name


class _LedgerCollector(Collector):
    def __init__(self, ledger: Ledger, store: Store, clock: Clock, feeds: Sequence[str]) -> None:
        self._ledger = ledger
        self._store = store
        self._clock = clock
        self._feeds = tuple(feeds)

    def collect(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "digest_deliveries",
            "Digests in the ledger by status (sent, failed, pending retries...) and frequency",
            labels=["status", "frequency"],
        )
        for (status, frequency), count in sorted(
            self._ledger.delivery_counts_by_frequency().items()
        ):
            deliveries.add_metric([status.value, frequency.value], count)
        yield deliveries
        yield GaugeMetricFamily(
            "digest_due_backlog",
            "Deliveries that are due and not yet claimed",
            value=self._ledger.count_claimable(self._clock()),
        )
        runs = self._ledger.last_runs(1)
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

    def _feed_metrics(self) -> Iterator[Metric]:
        errors = CounterMetricFamily(
            "digest_feed_poll_errors", "Failed polls of each feed, ever", labels=["feed"]
        )
        failing = GaugeMetricFamily(
            "digest_feed_failing", "1 while the feed's latest poll failed", labels=["feed"]
        )
        states = self._store.feed_states(self._feeds)
        for source in self._feeds:
            state, name = states.get(source), display_name(source)
            errors.add_metric([name], state.errors_total if state else 0)
            failing.add_metric([name], int(state is not None and state.failures > 0))
        yield errors
        yield failing


class Metrics:
    def __init__(self, ledger: Ledger, store: Store, clock: Clock, feeds: Sequence[str]) -> None:
        self._registry = CollectorRegistry()
        self._registry.register(_LedgerCollector(ledger, store, clock, feeds))

    def render(self) -> bytes:
        return generate_latest(self._registry)
