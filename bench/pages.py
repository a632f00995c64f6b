"""The daemon's pages while it sends: how long GET /unsubscribe/{t} takes (a benchmark, not a test).

    .venv/bin/python bench/pages.py [--readers 50000] [--rate 20] [--idle 10] [--postfix DIR]

Seeds N readers, all due now (by the real clock: the daemon has no other), starts `digest serve`
against a sink, and while its first dispatch run sends them all, fetches one reader's unsubscribe
page after another, --rate a second, each on a new connection as a mail client's click would be;
then the same for --idle seconds after the run. Prints p50, p99 and the largest of each phase.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import postfix
import servers
import workloads
from run import child

from digest import app as composition
from digest.config import load
from digest.demo.catcher import free_port
from digest.domain import SubscriberStatus

LINKS = 500  # readers whose pages are fetched, in turn
PATIENCE = 30.0  # seconds the daemon gets to answer /healthz


def _get(port: int, path: str) -> tuple[int, bytes, float]:
    started = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return response.status, body, time.perf_counter() - started


def _run_finished(port: int) -> bool:
    status, body, _ = _get(port, "/healthz")
    return status == 200 and json.loads(body)["scheduler"]["last_run"] is not None


def _wait_serving(port: int, daemon: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            raise RuntimeError(f"digest serve exited with {daemon.returncode}")
        try:
            _get(port, "/healthz")
        except OSError:
            time.sleep(0.05)
        else:
            return
    raise RuntimeError(f"digest serve did not answer within {PATIENCE:g} s")


def _unsubscribe_paths(env: dict[str, str]) -> list[str]:
    services = composition.build(load(None, env))
    try:
        mail = services.digest_mail()
        readers = itertools.islice(services.subscribers(SubscriberStatus.ACTIVE), LINKS)
        base = env["DIGEST_BASE_URL"]
        return [mail.links(r.id, r.token_version).unsubscribe[len(base) :] for r in readers]
    finally:
        services.close()


def _load(port: int, paths: list[str], rate: float, until: Callable[[], bool]) -> list[float]:
    """Fetch the pages in turn, rate a second, until until() is true; the latencies, in ms."""
    latencies: list[float] = []
    next_at = time.monotonic()
    checked = 0.0
    for path in itertools.cycle(paths):
        if time.monotonic() - checked >= 1:
            checked = time.monotonic()
            if until():
                return latencies
        time.sleep(max(next_at - time.monotonic(), 0))
        next_at += 1 / rate
        status, _, took = _get(port, path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}")
        latencies.append(took * 1000)
    return latencies


def _summary(latencies: list[float]) -> str:
    if len(latencies) < 2:
        return f"{len(latencies)} requests: too few to tell"
    p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
    return (
        f"{len(latencies):,} requests: p50 {statistics.median(latencies):.1f} ms, "
        f"p99 {p99:.1f} ms, max {max(latencies):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--readers", type=int, default=50_000)
    parser.add_argument("--articles", type=int, default=40)
    parser.add_argument("--connections", type=int, default=16, help="DIGEST_SMTP_CONNECTIONS")
    parser.add_argument("--rate", type=float, default=20.0, help="page requests a second")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds measured after the run")
    parser.add_argument("--postfix", type=Path, default=None, help="see bench/postfix.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digest-pages-") as folder:
        sink_port, web_port = free_port(), free_port()
        env = workloads.environment(f"sqlite:///{folder}/pages.db", sink_port, args.connections)
        env |= {
            "DIGEST_BASE_URL": f"http://127.0.0.1:{web_port}",
            # Every reader's slot has passed today, this week or this month, whatever the hour.
            "DIGEST_SEND_TIME": "00:00",
            "DIGEST_DISPATCH_INTERVAL_SECONDS": "86400",  # one run: the one at start-up
        }
        started = time.monotonic()
        child(workloads.seed, env, args.readers, args.articles, datetime.now(UTC))
        print(f"seeded {args.readers:,} readers in {time.monotonic() - started:.1f} s")
        paths = _unsubscribe_paths(env)
        sink = servers.sink(postfix.find(args.postfix), sink_port, pipelining=True)
        log = Path(folder) / "daemon.log"
        with log.open("wb") as output:
            daemon = subprocess.Popen(
                [sys.executable, "-m", "digest", "serve", "--port", str(web_port)],
                env=os.environ | env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_serving(web_port, daemon)
            started = time.monotonic()
            sending = _load(web_port, paths, args.rate, lambda: _run_finished(web_port))
            sent_in = time.monotonic() - started
            idle_until = time.monotonic() + args.idle
            idle = _load(web_port, paths, args.rate, lambda: time.monotonic() >= idle_until)
        finally:
            daemon.terminate()
            daemon.wait()
            servers.stop(sink)
        runs = [line for line in log.read_text().splitlines() if "run: sent" in line]
        run = runs[-1].partition("run: ")[2] if runs else "no run logged"
        print(f"the daemon's run ({sent_in:.0f} s): {run}")
        print(f"GET /unsubscribe/{{t}}, {args.rate:g} a second, each on a new connection")
        print(f"  while sending: {_summary(sending)}")
        print(f"  idle:          {_summary(idle)}")


if __name__ == "__main__":
    main()
