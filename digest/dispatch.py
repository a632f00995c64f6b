"""The one pipeline that both `digest send` and the daemon run: plan, then claim → render → send → record.

It names the small ports it needs (the Ledger, a DigestMail that turns claims into messages, a Sender)
and holds no state between runs: everything lives in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from digest.addresses import mask_address
from digest.domain import (
    EVERYONE,
    Article,
    Claim,
    Clock,
    Frequency,
    Only,
    Progress,
    ReplyClass,
    Run,
    RunSummary,
)
from digest.errors import SmtpConfigError
from digest.ledger import Failure, FinishRules, Ledger, PlanRules
from digest.mailer import Outcome, Outgoing, Sender
from digest.render import DigestBody, Links, Renderer
from digest.store import Store
from digest.tokens import Purpose, Tokens

T = TypeVar("T")
log = logging.getLogger("digest.dispatch")


@dataclass(frozen=True, slots=True)
class Job:
    now: datetime  # the instant whose due digests this run sends
    owner: str  # names this worker's leases
    plan: PlanRules
    finish: FinishRules
    lease: timedelta
    batch_size: int
    only: Only = EVERYONE


class DigestMail:
    """Turns claims into messages: one body per distinct window, only links and headers per reader."""

    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        tokens: Tokens,
        *,
        base_url: str,
        envelope_sender: str,
        one_click: bool,
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._tokens = tokens
        self._base_url = base_url
        self._envelope_sender = envelope_sender
        self._one_click = one_click
        self._bodies: dict[tuple[Frequency, int, int], DigestBody] = {}

    def body(self, frequency: Frequency, cursor_from: int, cursor_to: int) -> DigestBody:
        key = (frequency, cursor_from, cursor_to)
        if key not in self._bodies:
            articles: list[Article] = self._store.articles(cursor_from, cursor_to)
            self._bodies[key] = self._renderer.digest_body(frequency, articles)
        return self._bodies[key]

    def links(self, subscriber_id: int, token_version: int) -> Links:
        def link(purpose: Purpose) -> str:
            token = self._tokens.link_token(purpose, subscriber_id, token_version)
            return f"{self._base_url}/{purpose.value}/{token}"

        return Links(unsubscribe=link(Purpose.UNSUBSCRIBE), preferences=link(Purpose.PREFERENCES))

    def outgoing(self, claim: Claim) -> Outgoing:
        message = self._renderer.digest_message(
            self.body(*claim.window),
            claim.email,
            self.links(claim.subscriber_id, claim.token_version),
            message_id=claim.message_id,
            date=claim.planned_at,
            one_click=self._one_click,
        )
        return Outgoing(claim.delivery_id, self._envelope_sender, claim.email, message)


async def run_once(
    job: Job,
    ledger: Ledger,
    mail: DigestMail,
    sender: Sender,
    clock: Clock,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RunSummary:
    """Plan what is due at job.now and send it, batch by batch, until nothing claimable is left.

    Raises SmtpConfigError (after handing the affected claims back) when the relay refuses our
    sender or credentials: no reader is to blame for that. should_stop is asked before each
    claim, so a stopping daemon finishes and records the batch in flight and claims no more.
    """
    # Database work and rendering run in a worker thread, so that the daemon's event loop keeps
    # answering web requests and driving SMTP connections meanwhile. One thread per run, not the
    # default pool: each thread's malloc arena would keep its own batch of messages alive.
    with ThreadPoolExecutor(1, thread_name_prefix="digest-run") as worker:
        return await _run(job, ledger, mail, sender, clock, progress, should_stop, _OffLoop(worker))


class _OffLoop:
    def __init__(self, worker: ThreadPoolExecutor) -> None:
        self._worker = worker

    async def __call__(self, function: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._worker, function, *args)


async def _run(
    job: Job,
    ledger: Ledger,
    mail: DigestMail,
    sender: Sender,
    clock: Clock,
    progress: Progress | None,
    should_stop: Callable[[], bool],
    off_loop: _OffLoop,
) -> RunSummary:
    started = clock()
    summary = await off_loop(ledger.plan, job.now, job.plan, job.only)
    if progress is not None:
        progress.start(await off_loop(ledger.count_claimable, job.now, job.only))
    note = ""
    try:
        while not should_stop():
            claimed_at = clock()
            claims = await off_loop(
                ledger.claim, job.owner, claimed_at, job.lease, job.batch_size, job.only
            )
            if not claims:
                break
            lease = _Lease(claims, claimed_at + job.lease, clock)
            async with _lease_kept(job, ledger, clock, lease, off_loop):
                rendering = map(mail.outgoing, claims)  # lazy: list() renders it in the worker
                messages: list[Outgoing] = await off_loop(list, rendering)
                outcomes = await sender.send_many(messages, lease.holds)
            summary += await off_loop(_record, job, ledger, clock, claims, outcomes)
            if progress is not None:
                progress.advance(len(claims))
    except SmtpConfigError as exc:
        note = str(exc)
        raise
    finally:
        await off_loop(ledger.record_run, Run(started, clock(), summary, note))
    return summary


class _Lease:
    """What this worker may still send of a batch: the claims it holds, until when by its clock."""

    def __init__(self, claims: Sequence[Claim], until: datetime, clock: Clock) -> None:
        self.claims = claims
        self.held = {claim.delivery_id for claim in claims}
        self.until = until
        self._clock = clock

    def holds(self, delivery_id: int) -> bool:
        # A worker that stalled (a suspended VM, a stopped process) past `until` may have lost
        # the claim to another: sending it now could duplicate that worker's copy.
        return delivery_id in self.held and self._clock() < self.until

    def renewed(self, still_held: set[int], until: datetime) -> None:
        self.held &= still_held
        self.until = until


@asynccontextmanager
async def _lease_kept(
    job: Job, ledger: Ledger, clock: Clock, lease: _Lease, off_loop: _OffLoop
) -> AsyncIterator[None]:
    """Renew the batch's lease while it is being sent.

    A batch waits behind the connection pool, so a slow relay can hold it longer than one lease;
    without renewal another worker would reclaim and send it again.
    """

    async def renew() -> None:
        while True:
            await asyncio.sleep(job.lease.total_seconds() / 3)
            until = clock() + job.lease
            held = await off_loop(ledger.extend_lease, job.owner, lease.claims, until)
            lease.renewed(held, until)

    task = asyncio.create_task(renew())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _record(
    job: Job, ledger: Ledger, clock: Clock, claims: Sequence[Claim], outcomes: Sequence[Outcome]
) -> RunSummary:
    by_key = {claim.delivery_id: claim for claim in claims}
    sent = [by_key[o.key] for o in outcomes if o.reply is None]
    failures = [
        Failure(by_key[o.key], o.detail, permanent=o.reply is ReplyClass.PERMANENT)
        for o in outcomes
        if o.reply in (ReplyClass.TRANSIENT, ReplyClass.PERMANENT)
    ]
    refused = [o for o in outcomes if o.reply is ReplyClass.CONFIG]
    for failure in failures:
        claim = failure.claim
        log.warning(
            "digest %s to reader %d (%s), attempt %d, %s failure: %s",
            claim.period_key,
            claim.subscriber_id,
            mask_address(claim.email),
            claim.attempts + 1,
            "permanent" if failure.permanent else "transient",
            failure.detail,
        )
    summary = ledger.record(job.owner, clock(), sent, failures, job.finish)
    if refused:
        ledger.release(job.owner, [by_key[o.key] for o in refused])
        raise SmtpConfigError(f"the SMTP server refused our settings: {refused[0].detail}")
    return summary


async def dry_run(job: Job, ledger: Ledger, mail: DigestMail, sender: Sender) -> RunSummary:
    """Render every digest that is due at job.now and hand it to sender; write nothing."""
    summary = RunSummary()
    for batch in ledger.preview_plan(job.now, job.plan, job.only):
        due = [claim for claim in batch if claim.cursor_from < claim.cursor_to]
        outcomes = await sender.send_many([mail.outgoing(claim) for claim in due])
        summary += RunSummary(
            sent=sum(o.reply is None for o in outcomes), skipped=len(batch) - len(due)
        )
    return summary
