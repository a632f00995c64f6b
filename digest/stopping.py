"""Stopping on a signal: the first finishes the batch in flight, a second leaves at once."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import NoReturn

log = logging.getLogger("digest.stopping")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def leave_at_once(sig: int) -> NoReturn:
    """Exit without finishing anything: the leases hand unfinished sends to the next run."""
    log.warning("second signal: exiting at once")
    os._exit(128 + sig)


@contextlib.contextmanager
def stop_on_signal(announce: Callable[[str], None]) -> Iterator[Callable[[], bool]]:
    """Yield a should_stop for run_once that turns true at the first SIGTERM or SIGINT."""
    requested = False

    def handle(sig: int, _frame: FrameType | None) -> None:
        nonlocal requested
        if requested:
            leave_at_once(sig)
        requested = True
        name = signal.Signals(sig).name
        announce(f"{name}: finishing the batch in flight; a second signal stops at once")

    with handling(handle):
        yield lambda: requested


@contextlib.contextmanager
def handling(handler: Callable[[int, FrameType | None], None]) -> Iterator[None]:
    """handler for SIGINT and SIGTERM inside the block; the handlers from before it after."""
    previous = {sig: signal.signal(sig, handler) for sig in _SIGNALS}
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)
