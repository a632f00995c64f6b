"""Planning alone, timed (a benchmark, never a test): `Ledger.plan` over N due readers.

    .venv/bin/python bench/planning.py [--readers 100000] [--rounds 3] [--postgres]

A send run plans as it goes (a chunk of readers just before each claim), so bench/run.py cannot
see where planning ends; this seeds N due readers once, then plans a fresh copy of them each round
and prints seconds per 100,000 readers (the goal of issue 13: at most 1 s).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import workloads
from databases import PostgresCopies, SqliteCopies
from run import child

from digest import app as composition
from digest.config import load


def plan_once(env: dict[str, str]) -> float:
    services = composition.build(load(None, env))
    try:
        job = services.job(workloads.NOW)
        started = time.perf_counter()
        services.ledger.plan(job.now, job.plan, job.only)
        return time.perf_counter() - started
    finally:
        services.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="digest-planning-") as folder:
        copies: SqliteCopies | PostgresCopies = (
            PostgresCopies() if args.postgres else SqliteCopies(Path(folder))
        )
        try:
            env = workloads.environment(copies.template_url, 25, 1)
            child(workloads.seed, env, args.readers, 40)
            if isinstance(copies, SqliteCopies):
                copies.sealed()
            took = []
            for round_ in range(args.rounds):
                with copies.copy(f"plan{round_}") as url:
                    took.append(plan_once(workloads.environment(url, 25, 1)))
        finally:
            if isinstance(copies, PostgresCopies):
                copies.stop()
    per_100k = sorted(t / args.readers * 100_000 for t in took)
    database = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"planning {args.readers:,} readers on {database}: "
        f"{per_100k[len(per_100k) // 2]:.2f} s per 100k (min {per_100k[0]:.2f}, "
        f"max {per_100k[-1]:.2f}) over {args.rounds} rounds"
    )


if __name__ == "__main__":
    main()
