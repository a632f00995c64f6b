"""What comes back after sending, applied to readers: the `notices` table, and the one change each
notice makes. Each notice is kept once (by its fingerprint), so one told twice (a relay's retry,
a provider's redelivery) changes nothing the second time:

- a permanent bounce counts as a refusal in the SMTP session does (store.count_bounce);
- a complaint unsubscribes the reader at once and marks them complained;
- a mailto unsubscribe unsubscribes, as the one-click POST does;
- a delay is only kept.

A notice that names no reader of ours (a forged tag, a digest since pruned, an address we never
mailed) changes nothing and is one log line.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select, update

from digest.addresses import mask_address
from digest.database import insert_ignoring_conflicts, reading, writing
from digest.domain import Notice, NoticeKind, SubscriberStatus
from digest.models import DeliveryRow, NoticeRow, SubscriberRow
from digest.store import count_bounce, is_address

D, N, S = DeliveryRow, NoticeRow, SubscriberRow
log = logging.getLogger("digest.notices")


@dataclass(frozen=True, slots=True)
class Taken:
    """What a batch of notices did."""

    applied: Counter[NoticeKind] = field(default_factory=Counter)
    repeated: int = 0  # taken before: nothing changed
    unknown: int = 0  # named no reader of ours: nothing changed

    def __str__(self) -> str:
        kinds = ", ".join(f"{kind.value} {self.applied[kind]}" for kind in NoticeKind)
        return f"{kinds}; repeated {self.repeated}, unknown {self.unknown}"


class Notices:
    def __init__(self, engine: Engine, bounce_limit: int) -> None:
        self.engine = engine
        self._bounce_limit = bounce_limit

    def take(self, notices: Sequence[Notice], now: datetime) -> Taken:
        """Apply each notice once, each in a transaction of its own."""
        applied: Counter[NoticeKind] = Counter()
        repeated = unknown = 0
        for notice in notices:
            with writing(self.engine) as conn:
                subscriber_id, delivery_id = _named(conn, notice)
                if subscriber_id is None:
                    unknown += 1
                    log.warning(
                        "a %s from %s named no reader of ours: %s",
                        notice.kind.value,
                        notice.source,
                        _described(notice),
                    )
                    continue
                kept = conn.scalar(
                    insert_ignoring_conflicts(self.engine, N)
                    .values(
                        fingerprint=_fingerprint(notice, subscriber_id, delivery_id),
                        received_at=now,
                        kind=notice.kind.value,
                        source=notice.source,
                        subscriber_id=subscriber_id,
                        delivery_id=delivery_id,
                        detail=notice.detail[:500],
                    )
                    .returning(N.id)
                )
                if kept is None:
                    repeated += 1
                    continue
                self._apply(conn, notice.kind, subscriber_id, now)
                applied[notice.kind] += 1
        return Taken(applied, repeated, unknown)

    def _apply(self, conn: Connection, kind: NoticeKind, subscriber_id: int, now: datetime) -> None:
        if kind is NoticeKind.BOUNCE:
            count_bounce(conn, subscriber_id, self._bounce_limit)
        elif kind in (NoticeKind.COMPLAINT, NoticeKind.UNSUBSCRIBE):
            status = (
                SubscriberStatus.COMPLAINED
                if kind is NoticeKind.COMPLAINT
                else SubscriberStatus.UNSUBSCRIBED
            )
            conn.execute(
                update(S)
                # A complaint is never undone by a later unsubscribe: it keeps them off imports.
                .where(S.id == subscriber_id, S.status != SubscriberStatus.COMPLAINED.value)
                .values(
                    status=status.value,
                    unsubscribed_at=func.coalesce(S.unsubscribed_at, now),
                )
            )


def notice_counts(engine: Engine, since: datetime) -> dict[NoticeKind, int]:
    """Notices taken after since, by kind: for status and /metrics."""
    query = select(N.kind, func.count()).where(N.received_at > since).group_by(N.kind)
    with reading(engine) as conn:
        return {NoticeKind(kind): n for kind, n in conn.execute(query)}


def _named(conn: Connection, notice: Notice) -> tuple[int | None, int | None]:
    """(subscriber id, delivery id) of the notice's digest or reader, by the first it has of:
    the delivery its tag signs, the reader its mailto tag signs (at their token_version), the
    original Message-ID, the address."""
    if notice.delivery_id is not None:
        found = conn.scalar(select(D.subscriber_id).where(D.id == notice.delivery_id))
        return found, notice.delivery_id if found is not None else None
    if notice.reader is not None:
        subscriber_id, token_version = notice.reader
        query = select(S.id).where(S.id == subscriber_id, S.token_version == token_version)
        return conn.scalar(query), None
    if notice.message_id is not None:
        row = conn.execute(
            select(D.subscriber_id, D.id).where(D.message_id == notice.message_id).limit(1)
        ).one_or_none()
        if row is not None:
            return row.subscriber_id, row.id
    if notice.email is not None:
        return conn.scalar(select(S.id).where(is_address(notice.email))), None
    return None, None


def _fingerprint(notice: Notice, subscriber_id: int, delivery_id: int | None) -> str:
    """The same for a notice told twice: one kind about one digest (or reader, without one); a
    delay counts once per distinct thing the receiver said."""
    said = notice.detail if notice.kind is NoticeKind.DELAY else ""
    about = delivery_id if delivery_id is not None else notice.message_id or ""
    text = f"{notice.kind.value}|{subscriber_id}|{about}|{said}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _described(notice: Notice) -> str:
    if notice.delivery_id is not None:
        return f"delivery {notice.delivery_id}"
    if notice.reader is not None:
        return f"reader {notice.reader[0]}"
    if notice.message_id is not None:
        return f"Message-ID {notice.message_id[:80]}"
    return mask_address(notice.email) if notice.email else "nothing"
