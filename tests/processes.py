"""`digest` as real processes, for tests of what only separate processes show: daemons, races, crashes.

    env = digest_env(database_url, smtp_server)      # DIGEST_* for that database and server
    digest(env, "db", "upgrade")                     # run one command to the end (raises on failure)
    senders = [start(env, "send", "--now", MONDAY_0900) for _ in range(3)]  # not waited for
    results = finish_all(senders)                    # exit code, stdout, stderr of each
    run_entry_point("--version")                     # the installed console script, to the end
    with running_daemon(env, log=path) as (process, port): ...; stop_cleanly(process)
    logged_runs(path)                                # the summary of each run that did something
    last_run_finished(port)                          # when its last dispatch run ended, by /healthz

Each runs the project's own `python -m digest` in the repository; `command=` and `cwd=` run another
copy (an installed wheel's bin/digest) from another folder.
Seed what the process under test only reads with db_fixtures.seed, in this process: a Python
start per seeding step adds up to seconds a test.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from smtp_server import SmtpServer
from sqlalchemy import create_engine, select

from digest.demo.catcher import free_port
from digest.domain import DeliveryStatus, RunSummary
from digest.models import DeliveryRow, SubscriberRow

ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINT = Path(sysconfig.get_path("scripts")) / "digest"  # the console script pip installed
PATIENCE = 30.0  # seconds a live process gets to do what a test waits for
SECRET = "d" * 40
SENDER = "Mia's Feed <digest@miasfeed.example>"
CONFIRMED = "2026-11-23T09:00Z"  # a week before...
MONDAY_0900 = "2026-11-30T09:00Z"  # ... Monday 09:00 UTC: weekly readers confirmed then are due
SUMMARY = re.compile(r"^sent (\d+), skipped (\d+), retrying (\d+), failed (\d+)$", re.MULTILINE)
RUN_LOGGED = re.compile(r"run: sent (\d+), skipped (\d+), retrying (\d+), failed (\d+)")
DIGEST = (sys.executable, "-m", "digest")


def wait_for(condition: Callable[[], bool], what: str, patience: float = PATIENCE) -> None:
    """Poll until condition() holds; fail naming `what` after `patience` seconds."""
    deadline = time.monotonic() + patience
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def digest_env(database_url: str, smtp_server: SmtpServer, **settings: str) -> dict[str, str]:
    """This process's environment without any DIGEST_* of its own, set for one database and server.

    settings: more DIGEST_* variables by name, e.g. DIGEST_BATCH_SIZE="50".
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}
    return env | {
        "DIGEST_DATABASE_URL": database_url,
        "DIGEST_SMTP_HOST": smtp_server.host,
        "DIGEST_SMTP_PORT": str(smtp_server.port),
        "DIGEST_SECRET_KEY": SECRET,
        "DIGEST_SENDER": SENDER,
        **settings,
    }


def digest(
    env: Mapping[str, str], *args: str, command: Sequence[str] = DIGEST, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """Run one `digest` command to the end; raises CalledProcessError unless it exits 0."""
    return subprocess.run(
        [*command, *args], env=env, capture_output=True, text=True, check=True, cwd=cwd
    )


def start(env: Mapping[str, str], *args: str) -> subprocess.Popen[str]:
    """Start one `digest` command and return at once; collect it with finish()."""
    return subprocess.Popen(
        [*DIGEST, *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass(frozen=True)
class Finished:
    code: int
    out: str
    err: str

    @property
    def summary(self) -> RunSummary:
        """The `sent N, skipped N, retrying N, failed N` line of a `digest send`."""
        found = SUMMARY.findall(self.out)
        assert found, f"no summary line in {self.out!r} (stderr {self.err!r})"
        return RunSummary(*map(int, found[-1]))


def run_entry_point(*args: str, env: Mapping[str, str] | None = None) -> Finished:
    """Run the installed `digest` console script to the end, whatever its exit code."""
    done = subprocess.run(
        [ENTRY_POINT, *args], env=env, capture_output=True, text=True, check=False, cwd=ROOT
    )
    return Finished(done.returncode, done.stdout, done.stderr)


def finish(process: subprocess.Popen[str], patience: float = PATIENCE) -> Finished:
    """Wait for a started command; kill it (and fail) if it outlives `patience` seconds."""
    try:
        out, err = process.communicate(timeout=patience)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"{process.args!r} still running after {patience:g}s: {err}") from None
    return Finished(process.returncode, out, err)


def finish_all(
    processes: list[subprocess.Popen[str]], patience: float = PATIENCE
) -> list[Finished]:
    """finish() each in turn; if one outlives patience, kill the others too, so none is left behind."""
    try:
        return [finish(process, patience) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


def deliveries(database_url: str) -> list[tuple[str, DeliveryStatus]]:
    """Every delivery in the ledger as (reader address, status), by address, then oldest first."""
    engine = create_engine(database_url)
    query = (
        select(SubscriberRow.email, DeliveryRow.status)
        .join(SubscriberRow, SubscriberRow.id == DeliveryRow.subscriber_id)
        .order_by(SubscriberRow.email, DeliveryRow.id)
    )
    try:
        with engine.connect() as conn:
            return [(email, DeliveryStatus(status)) for email, status in conn.execute(query)]
    finally:
        engine.dispose()


def sent_rows(database_url: str) -> Counter[str]:
    """`sent` deliveries in the ledger, counted by reader address."""
    return Counter(e for e, status in deliveries(database_url) if status is DeliveryStatus.SENT)


@contextlib.contextmanager
def running_daemon(
    env: Mapping[str, str],
    *root_options: str,
    log: Path | None = None,
    command: Sequence[str] = DIGEST,
    cwd: Path = ROOT,
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A real `digest serve` on a free port; killed on the way out if a test left it running."""
    port = free_port()
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("w")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [*command, *root_options, "serve", "--port", str(port)],
            env={"DIGEST_BASE_URL": f"http://127.0.0.1:{port}", **env},
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            text=True,
        )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


def sending_process(daemon: int) -> int | None:
    """The child `digest serve` (pid daemon) sends from, found in /proc; None while it has none."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # it ended while we looked
            continue
        state, parent = stat.rpartition(")")[2].split()[:2]
        if int(parent) == daemon and state != "Z" and b"spawn_main" in command:
            return int(entry.name)
    return None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def healthz(port: int) -> tuple[int, dict[str, Any]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
        return response.status, json.loads(response.read())


def last_run_finished(port: int) -> datetime | None:
    """When the daemon's last dispatch run finished, by its /healthz; None before the first."""
    last = healthz(port)[1]["scheduler"]["last_run"]
    return None if last is None else datetime.fromisoformat(last["finished_at"])


def logged_runs(log: Path) -> list[RunSummary]:
    """The dispatch runs a daemon has logged so far (text or JSON lines), oldest first."""
    text = log.read_text() if log.exists() else ""
    return [RunSummary(*map(int, found)) for found in RUN_LOGGED.findall(text)]


def stop_cleanly(process: subprocess.Popen[str]) -> None:
    """SIGTERM, then the process must exit 0 within PATIENCE."""
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=PATIENCE) == 0
