"""The one pipeline that both `digest send` and the daemon run: plan, then claim → render → send → record.

It names the small ports it needs (the Ledger, a DigestMail that turns claims into messages, a Sender)
and holds no state between runs: everything lives in the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from digest.addresses import mask_address, tagged
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
from digest.ledger import Failure, FinishRules, Ledger, Planned, PlanRules
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
    """Turns claims into messages: one body per distinct window and edition, only links and
    headers per reader."""

    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        tokens: Tokens,
        *,
        base_url: str,
        envelope_sender: str,
        one_click: bool,
        bounce_address: str | None = None,
        unsubscribe_address: str | None = None,
    ) -> None:
        """bounce_address tags each digest's envelope sender with its delivery (VERP), and
        unsubscribe_address each reader's List-Unsubscribe mailto: with the reader."""
        self._store = store
        self._renderer = renderer
        self._tokens = tokens
        self._base_url = base_url
        self._envelope_sender = envelope_sender
        self._one_click = one_click
        self._bounce_address = bounce_address
        self._unsubscribe_address = unsubscribe_address
        self._bodies: dict[
            tuple[Frequency, int, int, str, frozenset[str] | None, bool], DigestBody
        ] = {}

    def body(
        self,
        frequency: Frequency,
        cursor_from: int,
        cursor_to: int,
        period_key: str,
        *,
        topics: frozenset[str] | None = None,
        web_version: bool = True,
    ) -> DigestBody:
        """The shared body of a window (cursor_from, cursor_to] in the edition period_key names
        (the reader's own period: readers in other timezones may get another edition), with the
        articles in topics only (None: every topic), so readers of one topic set share it."""
        key = (frequency, cursor_from, cursor_to, period_key, topics, web_version)
        if key not in self._bodies:
            articles: list[Article] = self._store.articles(cursor_from, cursor_to, topics)
            self._bodies[key] = self._renderer.digest_body(
                frequency, articles, period_key, web_version=web_version
            )
        return self._bodies[key]

    def links(
        self, subscriber_id: int, token_version: int, delivery_id: int | None = None
    ) -> Links:
        """A reader's links; with a delivery, the link to that digest's web version too."""

        def link(purpose: Purpose) -> str:
            token = self._tokens.link_token(purpose, subscriber_id, token_version)
            return f"{self._base_url}/{purpose.value}/{token}"

        web_version = mailto = None
        if delivery_id is not None:
            token = self._tokens.digest_token(delivery_id, token_version)
            web_version = f"{self._base_url}/{Purpose.DIGEST.value}/{token}"
        if self._unsubscribe_address is not None:
            tag = self._tokens.mailto_token(subscriber_id, token_version)
            mailto = f"mailto:{tagged(self._unsubscribe_address, tag)}?subject=unsubscribe"
        return Links(link(Purpose.UNSUBSCRIBE), link(Purpose.PREFERENCES), web_version, mailto)

    def outgoing(self, claim: Claim) -> Outgoing:
        message = self._renderer.digest_message(
            self.body(*claim.window, claim.period_key, topics=claim.topics),
            claim.email,
            self.links(claim.subscriber_id, claim.token_version, claim.delivery_id),
            message_id=claim.message_id,
            date=claim.planned_at,
            one_click=self._one_click,
        )
        return Outgoing(claim.delivery_id, self._return_path(claim), claim.email, message)

    def _return_path(self, claim: Claim) -> str:
        """The envelope sender: the bounce address tagged with the delivery (VERP), so that a
        bounce names its digest; else the From address."""
        if self._bounce_address is None:
            return self._envelope_sender
        return tagged(self._bounce_address, self._tokens.return_path_token(claim.delivery_id))


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
    started, summary, note = clock(), RunSummary(), ""
    if progress is not None:
        progress.start(await off_loop(ledger.count_due, job.now, job.plan, job.only))
    planning = ledger.planning(job.now, job.plan, job.only)
    batches = _Batches(job, ledger, mail, clock, off_loop, planning)
    # Planning streams: a chunk of readers is planned before each claim, so the first digests go
    # out while later readers are still being planned. Batches overlap: the next one is claimed
    # and rendered in the worker thread while this one is on the wire, so neither the relay nor
    # the CPU waits for the other. Two batches at most are held, so memory stays flat however
    # many readers there are.
    coming: asyncio.Task[_Batch | None] | None = None
    try:
        batch = await batches.next(should_stop)
        while batch is not None:
            coming = batches.prepare(should_stop)
            try:
                outcomes = await sender.send_many(batch.messages, batch.lease.holds)
                summary += await off_loop(_record, job, ledger, clock, batch.claims, outcomes)
            finally:
                await batch.lease.let_go()
            if progress is not None:
                progress.advance(len(batch.claims))
            if should_stop():
                break
            batch, coming = await coming, None
            if batch is None:  # claimed while that batch was out: what it left may be due now
                batch = await batches.next(should_stop)
    except SmtpConfigError as exc:
        note = str(exc)
        raise
    finally:
        if coming is not None:  # prepared, but not to be sent: it goes back untouched
            await batches.hand_back(coming)
        summary += RunSummary(skipped=batches.skipped)
        await off_loop(ledger.record_run, Run(started, clock(), summary, note))
    return summary


@dataclass(slots=True)
class _Batch:
    claims: list[Claim]
    lease: _Lease
    messages: list[Outgoing]


class _Batches:
    """Plans a step, then claims and renders the next batch, holding its lease until it is
    recorded or handed back."""

    def __init__(
        self,
        job: Job,
        ledger: Ledger,
        mail: DigestMail,
        clock: Clock,
        off_loop: _OffLoop,
        planning: Iterator[Planned],
    ) -> None:
        self._job, self._ledger, self._mail = job, ledger, mail
        self._clock, self._off_loop = clock, off_loop
        self._planning = planning
        self._planned = False  # every due reader has a delivery (or was skipped)
        self.skipped = 0
        self._ready = 0  # planned by this run and not yet claimed, as far as this run knows

    def _claim(self) -> tuple[datetime, list[Claim]]:
        """In the worker thread: the next claims, planning first until a whole batch is ready
        or every due reader is planned."""
        job = self._job
        while True:
            while not self._planned and self._ready < job.batch_size:
                step = next(self._planning, None)
                self._planned = step is None
                if step is not None:
                    self._ready += step.pending
                    self.skipped += step.skipped
            claimed_at = self._clock()
            claims = self._ledger.claim(job.owner, claimed_at, job.lease, job.batch_size, job.only)
            if claims or self._planned:
                self._ready = max(self._ready - len(claims), 0)
                return claimed_at, claims
            self._ready = 0  # another worker took what this one planned: plan on

    def prepare(self, should_stop: Callable[[], bool]) -> asyncio.Task[_Batch | None]:
        """The next batch, in a task of its own; None when nothing is left or the run stops."""
        return asyncio.create_task(self.next(should_stop))

    async def next(self, should_stop: Callable[[], bool]) -> _Batch | None:
        if should_stop():
            return None
        claimed_at, claims = await self._off_loop(self._claim)
        if not claims:
            return None
        lease = _Lease(claims, claimed_at + self._job.lease, self._clock)
        lease.keep(self._job, self._ledger, self._off_loop)
        try:
            rendering = map(self._mail.outgoing, claims)  # lazy: list() renders it in the worker
            messages: list[Outgoing] = await self._off_loop(list, rendering)
        except BaseException:
            await self._release(lease)
            raise
        return _Batch(claims, lease, messages)

    async def hand_back(self, coming: asyncio.Task[_Batch | None]) -> None:
        """Release a prepared batch that will not be sent (the run stops or failed)."""
        try:
            batch = await coming  # a claim half-way in the worker thread is let finish
        except Exception:  # noqa: BLE001 - the run's own error, if any, is the one to report
            return
        if batch is not None:
            await self._release(batch.lease)

    async def _release(self, lease: _Lease) -> None:
        await lease.let_go()
        await self._off_loop(self._ledger.release, self._job.owner, lease.claims)


class _Lease:
    """What this worker may still send of a batch: the claims it holds, until when by its clock.

    From its claim until it is recorded, a batch's lease is renewed every third of its length:
    a batch waits behind the one being sent and behind the connection pool, so a slow relay can
    hold it longer than one lease, and without renewal another worker would reclaim and send it
    again.
    """

    def __init__(self, claims: Sequence[Claim], until: datetime, clock: Clock) -> None:
        self.claims = claims
        self.held = {claim.delivery_id for claim in claims}
        self.until = until
        self._clock = clock
        self._renewal: asyncio.Task[None] | None = None

    def holds(self, delivery_id: int) -> bool:
        # A worker that stalled (a suspended VM, a stopped process) past `until` may have lost
        # the claim to another: sending it now could duplicate that worker's copy.
        return delivery_id in self.held and self._clock() < self.until

    def keep(self, job: Job, ledger: Ledger, off_loop: _OffLoop) -> None:
        async def renew() -> None:
            while True:
                await asyncio.sleep(job.lease.total_seconds() / 3)
                until = self._clock() + job.lease
                still_held = await off_loop(ledger.extend_lease, job.owner, self.claims, until)
                self.held &= still_held
                self.until = until

        self._renewal = asyncio.create_task(renew())

    async def let_go(self) -> None:
        """Stop renewing: the batch is recorded, or handed back."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal


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
