"""The daemon's sends, in a process of their own, so that its pages never wait behind them.

One Python process cannot render and write thousands of digests a second and answer a reader's
click promptly: both need the GIL. `digest serve` therefore sends from a child process that it
starts on the first dispatch run and keeps for the next ones. The child builds its own Services
from the daemon's settings and logs as the daemon does; the daemon tells it when to run, when to
stop claiming (its first SIGTERM or SIGINT) and when to quit. The ledger is the only state they
share, so a child that dies loses nothing: its claims go back when their lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from digest import app as composition
from digest.app import real_clock
from digest.config import LogFormat, Settings
from digest.domain import Clock, RunSummary
from digest.errors import DigestError

log = logging.getLogger("digest.daemon")

QUIT_PATIENCE = 10.0  # seconds a child that finished its run gets to close its connections


@dataclass(frozen=True, slots=True)
class _Run:
    now: datetime
    # How far the daemon's clock is from the real one (the demo's calendar runs days ahead): the
    # child's clock keeps that distance, so leases and retries are reckoned in the daemon's time.
    ahead: timedelta


@dataclass(frozen=True, slots=True)
class _Failed:
    error: str


_STOP = "stop"  # finish the batch in flight and claim no more, in this run and any later one
_QUIT = "quit"  # close and exit
_UNEXPECTED = "the run failed unexpectedly; the sending process logged why"


class SendingProcess:
    """Runs each dispatch run's `Services.send` in a child process, started on first use."""

    def __init__(self, settings: Settings, log_format: LogFormat, log_level: int) -> None:
        self._settings = settings
        self._log_format = log_format
        self._log_level = log_level
        self._child: BaseProcess | None = None
        self._pipe: Connection | None = None

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    async def run(self, now: datetime, clock: Clock) -> RunSummary:
        pipe = self._pipe or self._start()
        try:
            pipe.send(_Run(now, clock() - real_clock()))
            answer: RunSummary | _Failed = await asyncio.to_thread(pipe.recv)
        except (EOFError, OSError):
            code = self._forget()
            raise DigestError(
                f"the sending process ended in the middle of a run (exit code {code}); "
                "its claims go back when their lease runs out, and the next run starts another"
            ) from None
        if isinstance(answer, _Failed):
            raise DigestError(answer.error)
        return answer

    def stop(self) -> None:
        if self._pipe is not None:
            with contextlib.suppress(OSError):  # a child that is gone has nothing to stop
                self._pipe.send(_STOP)

    async def close(self, finished: bool) -> None:
        """Let the child exit when its run finished; else end it now, as a second signal would."""
        if self._child is None or self._pipe is None:
            return
        child = self._child
        if finished:
            with contextlib.suppress(OSError):
                self._pipe.send(_QUIT)
            await asyncio.to_thread(child.join, QUIT_PATIENCE)
        if child.is_alive():
            child.kill()
            await asyncio.to_thread(child.join)
        self._forget()

    def _start(self) -> Connection:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads forked
        ours, theirs = context.Pipe()
        self._child = context.Process(
            target=_child_main,
            args=(theirs, self._settings, self._log_format, self._log_level),
            name="digest-send",
        )
        self._child.start()
        theirs.close()
        self._pipe = ours
        log.info("sending from process %d", self._child.pid)
        return ours

    def _forget(self) -> int | None:
        child, pipe = self._child, self._pipe
        self._child = self._pipe = None
        if pipe is not None:
            pipe.close()
        if child is None:
            return None
        child.join(QUIT_PATIENCE)
        return child.exitcode


# -- the child ---------------------------------------------------------------------------------


def _child_main(pipe: Connection, settings: Settings, log_format: LogFormat, level: int) -> None:
    # A Ctrl-C reaches the whole process group; the daemon decides what it means (finish the
    # batch, or leave at once) and tells this process through the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        services = composition.start(settings, log_format, level)
    # On failure, say why to the run that started this process, and exit: the next run starts
    # another, which tries again (the database may be back, or upgraded, by then).
    except DigestError as exc:
        _refuse(pipe, str(exc))
        return
    except Exception:
        log.exception("the sending process could not start")
        _refuse(pipe, _UNEXPECTED)
        return
    stopping = threading.Event()
    runs: queue.SimpleQueue[_Run | None] = queue.SimpleQueue()
    threading.Thread(target=_listen, args=(pipe, runs, stopping), daemon=True).start()
    try:
        while (order := runs.get()) is not None:
            pipe.send(_send(services, order, stopping))
    finally:
        services.close()


def _refuse(pipe: Connection, error: str) -> None:
    with contextlib.suppress(EOFError):
        pipe.recv()  # the run this process was started for
        pipe.send(_Failed(error))


def _listen(
    pipe: Connection, runs: queue.SimpleQueue[_Run | None], stopping: threading.Event
) -> None:
    """Read the daemon's orders while a run is in flight, so a stop reaches it between batches."""
    while True:
        try:
            order = pipe.recv()
        except EOFError:
            # The daemon is gone without a word (a second signal, a crash): leave at once, as it
            # did. Whatever this process had claimed goes back when the lease runs out.
            os._exit(1)
        if isinstance(order, _Run):
            runs.put(order)
        elif order == _STOP:
            stopping.set()
        else:
            runs.put(None)
            return


def _send(
    services: composition.Services, order: _Run, stopping: threading.Event
) -> RunSummary | _Failed:
    def clock() -> datetime:
        return real_clock() + order.ahead

    try:
        sent = asyncio.run(services.send(order.now, clock, should_stop=stopping.is_set))
    except DigestError as exc:
        return _Failed(str(exc))
    except Exception:
        log.exception("the run failed")
        return _Failed(_UNEXPECTED)
    return sent.summary
