"""The send path's benchmark (a benchmark, never a test): digest against the wire's limit.

    .venv/bin/python bench/run.py [--readers 50000] [--rounds 3] [--postfix DIR]
    .venv/bin/python bench/run.py --latency 20             # through a relay 20 ms away each way
    .venv/bin/python bench/run.py --readers 1000000 --rounds 1 --give-up 900   # smtp-source, digest
    .venv/bin/python bench/run.py --topics      # readers in 8 topic sets (issue 15), not all in one
    .venv/bin/python bench/run.py --return-paths    # VERP return paths, mailto: unsubscribes (16)

One run measures every configuration once per round, interleaved (round 1: A B C D, round 2:
A B C D, ...), so that the ratios pair figures taken in the same minute on a shared machine:

  smtp-source   Postfix's C client sending digest's own message (as digest put it on the wire) to
                the sink over 16 reused sessions: the wire's limit here. Absent when the tools are
                (bench/postfix.py says how to get them); only digest's own figures follow then.
  digest        Services.send, the run `digest send` makes (plan, claim, render, send, record),
                one process, SQLite.
  naive         per reader: the templates rendered, a stdlib EmailMessage, aiosmtplib.send (a
                connection per message), on the first --naive-readers readers.
  2×SQLite, 2×PostgreSQL
                two Services.send processes at once on one database.

The sink is Postfix's smtp-sink when present, else bench/sink.py; --no-pipelining makes it keep
PIPELINING to itself. Each run gets a fresh copy of one seeded database (seeding runs once, in a
child process). Rates are digests per second from the go to the last process's end; CPU is the
sending processes' user + system time per digest; peak RSS is each sending process's own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import postfix
import servers
import workloads
from databases import PostgresCopies, SqliteCopies

from digest.demo.catcher import free_port

SPAWN = multiprocessing.get_context("spawn")
SOURCE, DIGEST, NAIVE, TWO_SQLITE, TWO_POSTGRES = (
    "smtp-source",
    "digest",
    "naive",
    "2×SQLite",
    "2×PostgreSQL",
)
EVERY = (SOURCE, DIGEST, NAIVE, TWO_SQLITE, TWO_POSTGRES)
LARGE = 300_000  # above this many readers, only smtp-source and digest run unless --only says


@dataclass(frozen=True, slots=True)
class Figure:
    sent: int
    wall: float
    cpu: float  # seconds, every sending process
    peak_rss: float | None  # MiB, the largest sending process
    counted: float | None = None  # seconds from the go to the run's total counted
    first_batch: float | None = None  # seconds from the go to the first batch recorded
    finished: bool = True

    @property
    def rate(self) -> float:
        return self.sent / self.wall


class Bench:
    """The sink (and relay), the seeded databases and the message: what every run shares."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.tools = postfix.find(args.postfix)
        sink_port = free_port()
        stack.callback(
            servers.stop, servers.sink(self.tools, sink_port, pipelining=args.pipelining)
        )
        self.port = sink_port
        if args.latency:
            self.port = free_port()
            stack.callback(
                servers.stop,
                servers.script("relay.py", str(self.port), str(sink_port), str(args.latency)),
            )
        self.message = folder / "message.eml"
        self.sqlite = SqliteCopies(folder)
        self.postgres: PostgresCopies | None = None
        self._runs = 0

    def env(self, url: str, connections: int | None = None) -> dict[str, str]:
        env = workloads.environment(url, self.port, connections or self.args.connections)
        return env | (workloads.RETURN_PATHS if self.args.return_paths else {})

    def capture_message(self) -> int:
        """Send one digest to a sink that keeps it: smtp-source sends exactly what digest sends."""
        url = f"sqlite:///{self.folder / 'one.db'}"
        port = free_port()
        sink = servers.script("sink.py", str(port), "--keep", str(self.message))
        try:
            one = workloads.environment(url, port, 1)
            one |= workloads.RETURN_PATHS if self.args.return_paths else {}
            workloads.send_one(one, self.args.articles)
        finally:
            servers.stop(sink)
        wire = self.message.read_bytes()
        self.message.write_bytes(postfix.plain_message(wire))
        return len(wire)

    def seed(self, configs: Sequence[str]) -> None:
        readers, articles = self.args.readers, self.args.articles
        started = time.monotonic()
        seed = partial(workloads.seed, topics=self.args.topics)
        child(seed, self.env(self.sqlite.template_url), readers, articles)
        self.sqlite.sealed()
        mix = f", readers in {len(workloads.TOPIC_MIX)} topic sets" if self.args.topics else ""
        print(
            f"seeded {readers:,} readers, {articles} articles{mix} on SQLite in "
            f"{time.monotonic() - started:.1f} s"
        )
        if TWO_POSTGRES not in configs:
            return
        try:
            self.postgres = PostgresCopies()
        except Exception as exc:  # noqa: BLE001 -- PgUnavailable and whatever else: say, skip
            print(f"PostgreSQL could not start ({exc}): {TWO_POSTGRES} is skipped")
            return
        started = time.monotonic()
        child(seed, self.env(self.postgres.template_url), readers, articles)
        print(f"seeded the same on PostgreSQL in {time.monotonic() - started:.1f} s")

    def close(self) -> None:
        if self.postgres is not None:
            self.postgres.stop()

    # -- the configurations -------------------------------------------------------------------

    def source(self) -> Figure:
        assert self.tools is not None
        ran = self.tools.run_source(self.port, self.message, self.args.readers, self.args.sessions)
        cpu = ran.usage.ru_utime + ran.usage.ru_stime
        return Figure(self.args.readers, ran.wall, cpu, None)

    def digest(self, connections: int | None = None) -> Figure:
        with self.sqlite.copy(self._name()) as url:
            env = self.env(url, connections)
            return _measure([(workloads.send, (env, DIGEST))], self.args.give_up)

    def naive(self) -> Figure:
        env = self.env(self.sqlite.template_url)  # it only reads
        readers = min(self.args.naive_readers, self.args.readers)
        return _measure([(workloads.naive, (env, readers))])

    def two(self, copies: SqliteCopies | PostgresCopies | None) -> Figure | None:
        if copies is None:
            return None
        with copies.copy(self._name()) as url:
            env = self.env(url)
            runs = [(workloads.send, (env, f"process {n}")) for n in (1, 2)]
            return _measure(runs, self.args.give_up)

    def _name(self) -> str:
        self._runs += 1
        return f"run{self._runs}"


# -- processes -----------------------------------------------------------------------------------


def child(target: Callable[..., None], *args: Any) -> None:
    child = SPAWN.Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"{target.__name__} failed (exit code {child.exitcode})")


def _measure(
    runs: Sequence[tuple[Callable[..., None], tuple[Any, ...]]], give_up: float | None = None
) -> Figure:
    """Start each process, wait until all are ready, say go, and wait for them all to end; after
    give_up seconds, stop them and report what they had done by then."""
    ready, go, results = SPAWN.Semaphore(0), SPAWN.Event(), SPAWN.Queue()
    marks = [SPAWN.Array("d", 3, lock=False) for _ in runs]
    children = [
        SPAWN.Process(target=target, args=(*args, mark, ready, go, results))
        for (target, args), mark in zip(runs, marks, strict=True)
    ]
    for child in children:
        child.start()
    for _ in children:
        ready.acquire()
    started = time.monotonic()
    go.set()
    deadline = None if give_up is None else started + give_up
    for child in children:
        child.join(None if deadline is None else max(deadline - time.monotonic(), 0))

    def since(mark: int) -> float | None:
        known = [marked[mark] for marked in marks if marked[mark]]
        return min(known) - started if known else None

    if any(child.is_alive() for child in children):
        wall = time.monotonic() - started
        peaks = [_high_water(child.pid) for child in children]
        for child in children:
            child.terminate()
            child.join()
        return Figure(
            sent=int(sum(marked[workloads.RECORDED] for marked in marks)),
            wall=wall,
            cpu=0.0,
            peak_rss=max((peak for peak in peaks if peak is not None), default=None),
            counted=since(workloads.COUNTED),
            first_batch=since(workloads.FIRST_BATCH),
            finished=False,
        )
    failed = [child.exitcode for child in children if child.exitcode != 0]
    if failed:
        raise RuntimeError(f"a measured process failed (exit code {failed[0]})")
    measured: list[workloads.Measured] = [results.get(timeout=10) for _ in children]
    return Figure(
        sent=sum(m.sent for m in measured),
        wall=max(m.ended for m in measured) - started,
        cpu=sum(m.cpu for m in measured),
        peak_rss=max(m.peak_rss for m in measured),
        counted=since(workloads.COUNTED),
        first_batch=since(workloads.FIRST_BATCH),
    )


def _high_water(pid: int | None) -> float | None:
    """A live process's peak RSS so far, in MiB (Linux's VmHWM), read before it is stopped."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kib = next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else int(kib) / 1024


# -- the report ----------------------------------------------------------------------------------


def _spread(values: Sequence[float], form: str) -> str:
    return f"{statistics.median(values):{form}} ({min(values):{form}}–{max(values):{form}})"


def _report(figures: dict[str, list[Figure]], readers: int) -> None:
    print()
    print(
        f"{'configuration':<16} {'digests/s, median (min–max)':<30} {'CPU µs/digest':>13} {'peak RSS MiB':>12}"
    )
    for name, runs in figures.items():
        if not runs:
            continue
        unfinished = [run for run in runs if not run.finished]
        rates = _spread([run.rate for run in runs], ",.0f")
        cpu = statistics.median(run.cpu / max(run.sent, 1) * 1e6 for run in runs)
        peaks = [run.peak_rss for run in runs if run.peak_rss is not None]
        peak = f"{max(peaks):12.0f}" if peaks else f"{'-':>12}"
        cpu_text = f"{cpu:13.0f}" if not unfinished else f"{'-':>13}"
        print(f"{name:<16} {rates:<30} {cpu_text} {peak}")
        for run in unfinished:
            print(
                f"{'':16} did not finish in {run.wall:.0f} s: {run.sent:,} of {readers:,} recorded"
            )
        counted = [run.counted for run in runs if run.counted is not None]
        first = [run.first_batch for run in runs if run.first_batch is not None]
        if counted and first:
            print(
                f"{'':16} total counted at {_spread(counted, '.2f')} s,"
                f" first batch recorded at {_spread(first, '.2f')} s"
            )


def _ratios(figures: dict[str, list[Figure]], pairs: Sequence[tuple[str, str, bool]]) -> None:
    """Each ratio is taken within a round, then summarised: the pairs share a minute."""
    lines = []
    for top, bottom, as_times in pairs:
        per_round = [
            a.rate / b.rate
            for a, b in zip(figures.get(top, []), figures.get(bottom, []), strict=False)
            if a.finished and b.finished
        ]
        if not per_round:
            continue
        if as_times:
            lines.append(f"{top} ÷ {bottom}: {_spread(per_round, '.1f').replace(' (', '× (')}")
        else:
            percent = [100 * ratio for ratio in per_round]
            lines.append(f"{top} ÷ {bottom}: {_spread(percent, '.1f').replace(' (', ' % (')}")
    if lines:
        print("\nratios, per round (median, min–max over rounds):")
        for line in lines:
            print(f"  {line}")


def _configs(args: argparse.Namespace, bench: Bench) -> dict[str, Callable[[], Figure | None]]:
    if args.latency:
        runs: dict[str, Callable[[], Figure | None]] = {SOURCE: bench.source}
        for connections in args.latency_connections:
            runs[f"digest, {connections} conn."] = partial(bench.digest, connections)
    else:
        runs = {
            SOURCE: bench.source,
            DIGEST: bench.digest,
            NAIVE: bench.naive,
            TWO_SQLITE: lambda: bench.two(bench.sqlite),
            TWO_POSTGRES: lambda: bench.two(bench.postgres),
        }
        runs = {name: run for name, run in runs.items() if name in args.only}
    if bench.tools is None:
        runs.pop(SOURCE, None)
    return runs


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--readers",
        "--subscribers",
        type=int,
        default=None,
        help="readers seeded, all due (default 50,000; 1,000 with --latency)",
    )
    parser.add_argument("--articles", type=int, default=40)
    parser.add_argument(
        "--topics",
        action="store_true",
        help="readers hold a realistic mix of topic sets (8, a quarter every topic), not all",
    )
    parser.add_argument(
        "--return-paths",
        action="store_true",
        help="each digest from its own VERP return path, with a mailto: unsubscribe (issue 16)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16, help="DIGEST_SMTP_CONNECTIONS")
    parser.add_argument("--sessions", type=int, default=16, help="smtp-source's sessions")
    parser.add_argument(
        "--naive-readers",
        type=int,
        default=1000,
        help="readers the naive loop sends to (it is slow)",
    )
    parser.add_argument(
        "--only",
        type=lambda text: text.split(","),
        default=None,
        help=f"some of {','.join(EVERY)} (default: all; above {LARGE:,} readers {SOURCE},{DIGEST})",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        metavar="MS",
        help="relay-latency mode: a proxy adding MS each way; smtp-source and "
        "digest at each of --latency-connections",
    )
    parser.add_argument(
        "--latency-connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[4, 16, 32],
    )
    parser.add_argument(
        "--pipelining",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="whether the sink advertises PIPELINING",
    )
    parser.add_argument(
        "--postfix",
        type=Path,
        default=None,
        help="root of an unpacked postfix package (see bench/postfix.py)",
    )
    parser.add_argument(
        "--give-up",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop a digest run after this long and count what it sent",
    )
    args = parser.parse_args()
    if args.readers is None:
        args.readers = 1_000 if args.latency else 50_000
    if args.only is None:
        args.only = list(EVERY) if args.readers <= LARGE else [SOURCE, DIGEST]
    unknown = set(args.only) - set(EVERY)
    if unknown:
        parser.error(f"--only: unknown {', '.join(sorted(unknown))}; choose from {','.join(EVERY)}")
    return args


def main() -> None:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="digest-bench-") as folder, ExitStack() as stack:
        bench = Bench(args, stack, Path(folder))
        stack.callback(bench.close)
        if bench.tools is None:
            print(postfix.INSTALL)
        sink = "smtp-sink" if bench.tools else "bench/sink.py"
        relay = f", through a relay {args.latency:g} ms away each way" if args.latency else ""
        print(
            f"sink: {sink}, PIPELINING {'advertised' if args.pipelining else 'not advertised'}"
            f"{relay}; {args.readers:,} readers, {args.rounds} rounds, "
            f"{args.connections} connections, smtp-source {args.sessions} sessions"
        )
        print(f"the message: {bench.capture_message():,} bytes, as digest sends it")
        runs = _configs(args, bench)
        bench.seed(list(runs))
        figures: dict[str, list[Figure]] = {name: [] for name in runs}
        for round_ in range(1, args.rounds + 1):
            for name, run in runs.items():
                figure = run()
                if figure is None:
                    continue
                figures[name].append(figure)
                state = "" if figure.finished else " (stopped)"
                print(
                    f"round {round_}  {name:<16} {figure.rate:8,.0f} digests/s  "
                    f"{figure.sent:,} in {figure.wall:.1f} s{state}",
                    flush=True,
                )
        _report(figures, args.readers)
        pairs = [(name, SOURCE, False) for name in figures if name not in (SOURCE, NAIVE)]
        _ratios(figures, [*pairs, (DIGEST, NAIVE, True)])


if __name__ == "__main__":
    main()
