"""Prometheus text for `GET /metrics`, read from the ledger at scrape time.

Reading the tables rather than counting in memory keeps the numbers right across restarts and
across several daemons sharing one database.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from digest.dispatch import Clock
from digest.store import Store


class _LedgerCollector(Collector):
    def __init__(self, store: Store, clock: Clock) -> None:
        self._store = store
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        deliveries = GaugeMetricFamily(
            "digest_deliveries",
            "Digests in the ledger by status (sent, failed, pending retries...) and frequency",
            labels=["status", "frequency"],
        )
        for (status, frequency), count in sorted(
            self._store.delivery_counts_by_frequency().items()
        ):
            deliveries.add_metric([status.value, frequency.value], count)
        yield deliveries
        yield GaugeMetricFamily(
            "digest_due_backlog",
            "Deliveries that are due and not yet claimed",
            value=self._store.count_claimable(self._clock()),
        )
        runs = self._store.last_runs(1)
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


class Metrics:
    def __init__(self, store: Store, clock: Clock) -> None:
        self._registry = CollectorRegistry()
        self._registry.register(_LedgerCollector(store, clock))

    def render(self) -> bytes:
        return generate_latest(self._registry)
