"""The throughput and memory benchmark of the send path (a benchmark, never a test).

    .venv/bin/python bench/run.py [--subscribers 100000] [--articles 40] [--connections 8]

Seeds a fresh SQLite database (in a child process, so its memory is not counted) with N confirmed
readers spread over the three frequencies and a few timezones, and M articles; then runs the real
`Services.send` (the run `digest send` makes) against a minimal SMTP sink in another process, and prints digests per second,
CPU seconds and peak memory (RSS) of the sending process.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from digest import app as composition
from digest import database
from digest.config import load
from digest.demo.catcher import free_port
from digest.domain import ArticleDraft, Frequency, SubscriberDraft

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # a Monday 09:00 UTC: weekly readers are due
ZONES = ("UTC", "Europe/London", "Europe/Madrid", "America/New_York", "Asia/Kolkata")
FREQUENCIES = tuple(Frequency)
SEED_BATCH = 5000
SUMMARY = (
    "Researchers followed 4,000 adults for a decade and found that a regular sleep schedule "
    "matters as much as its length. <em>Small, steady habits</em> made the largest difference. "
)


def environment(db: Path, port: int, connections: int) -> dict[str, str]:
    return {
        "DIGEST_DATABASE_URL": f"sqlite:///{db}",
        "DIGEST_SMTP_HOST": "127.0.0.1",
        "DIGEST_SMTP_PORT": str(port),
        "DIGEST_SMTP_CONNECTIONS": str(connections),
        "DIGEST_SECRET_KEY": "b" * 40,
        "DIGEST_SENDER": "Mia's Feed <digest@miasfeed.example>",
        "DIGEST_BASE_URL": "https://news.example",
    }


def seed(env: dict[str, str], subscribers: int, articles: int) -> None:
    services = composition.build(load(None, env), check_schema=False)
    database.upgrade(services.store.engine)
    confirmed = NOW - timedelta(days=40)  # everyone confirmed long ago: every reader is due
    for start in range(0, subscribers, SEED_BATCH):
        batch = [
            SubscriberDraft(f"reader{n}@example.org", FREQUENCIES[n % 3], ZONES[n % len(ZONES)])
            for n in range(start, min(start + SEED_BATCH, subscribers))
        ]
        services.store.add_subscribers(batch, confirmed=True, now=confirmed)
    drafts = [
        ArticleDraft(
            url=f"https://miasfeed.example/articles/{n}",
            title=f"Sleep study {n}: regular bedtimes protect the heart",
            summary=SUMMARY * 3,
            category=("Medical News & Research", "Nutrition", "Mental Health", "Fitness")[n % 4],
            reading_minutes=2 + n % 5,
            published_at=confirmed + timedelta(hours=n),
        )
        for n in range(articles)
    ]
    services.store.upsert_articles(drafts, confirmed + timedelta(days=1))
    services.close()


def send(env: dict[str, str]) -> tuple[str, float, float]:
    services = composition.build(load(None, env))

    async def go() -> str:
        sent = await services.send(NOW, lambda: NOW)
        return sent.summary.line()

    wall, cpu = time.perf_counter(), time.process_time()
    line = asyncio.run(go())
    return line, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--subscribers", type=int, default=100_000)
    parser.add_argument("--articles", type=int, default=40)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = environment(Path(folder) / "bench.db", port, args.connections)
        started = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(
            target=seed, args=(env, args.subscribers, args.articles)
        )
        child.start()
        child.join()
        print(
            f"seeded {args.subscribers} readers, {args.articles} articles in {time.perf_counter() - started:.1f} s"
        )
        sink = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("sink.py")), str(port)],
            stdout=subprocess.PIPE,
        )
        try:
            assert sink.stdout is not None and sink.stdout.readline().strip() == b"ready"
            line, wall, cpu = send(env)
        finally:
            sink.terminate()
            sink.wait()
    sent = int(line.split(",")[0].split()[1])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(line)
    print(f"{sent} digests in {wall:.1f} s: {sent / wall:.0f} digests/s")
    print(
        f"CPU {cpu:.1f} s ({cpu / max(sent, 1) * 1e6:.0f} µs per digest), peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
