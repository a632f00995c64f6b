"""subscribers: one reader per address without regard to case

Revision ID: 0003
Revises: 0002

Readers whose addresses differ only in case (Reader@example.org, reader@example.org) are one
person who got one digest per spelling. They are merged into one reader, then subscribers.email_key
(the address casefolded) gets a unique index so that no second spelling can be added again.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BATCH = 1000
# The merged reader's status: the first of these that any of the spellings has. Asking to stop
# from any spelling stops them all; a bounce is the one mailbox bouncing, whatever the spelling.
STATUS_PRECEDENCE = ("unsubscribed", "bounced", "active", "pending")
# Which finished delivery of one period the merged reader keeps: the one that was sent, if any.
FINISHED_PRECEDENCE = ("sent", "failed", "skipped")

subscribers = sa.table(
    "subscribers",
    sa.column("id", sa.Integer),
    sa.column("email", sa.String),
    sa.column("email_key", sa.String),
    sa.column("status", sa.String),
    sa.column("created_at", sa.DateTime),
    sa.column("unsubscribed_at", sa.DateTime),
    sa.column("cursor", sa.Integer),
    sa.column("anchor", sa.DateTime),
    sa.column("bounces", sa.Integer),
)
deliveries = sa.table(
    "deliveries",
    sa.column("id", sa.Integer),
    sa.column("subscriber_id", sa.Integer),
    sa.column("period_key", sa.String),
    sa.column("status", sa.String),
)
S, D = subscribers.c, deliveries.c


def key(email: str) -> str:
    # digest.addresses.address_key as this revision was written, copied so that the migration
    # always does the same thing whatever that function becomes.
    return email.casefold()


def upgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(sa.Column("email_key", sa.String(length=762), nullable=True))
    connection = op.get_bind()
    _fill_keys(connection)
    groups = connection.scalars(
        sa.select(S.email_key).group_by(S.email_key).having(sa.func.count() > 1)
    ).all()
    merged = sum(_merge(connection, group) for group in groups)
    # On SQLite this rebuilds the table: database.upgrade runs migrations with foreign keys off,
    # or dropping the old table would cascade to every delivery.
    with op.batch_alter_table("subscribers") as batch:
        batch.alter_column("email_key", existing_type=sa.String(length=762), nullable=False)
    op.create_index("ix_subscribers_email_key", "subscribers", ["email_key"], unique=True)
    _note(
        f"merged {merged} readers whose addresses differ only in case into {len(groups)}"
        if groups
        else "no readers' addresses differ only in case: none merged"
    )


def downgrade() -> None:
    op.drop_index("ix_subscribers_email_key", table_name="subscribers")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("email_key")


def _fill_keys(connection: sa.Connection) -> None:
    fill = (
        sa.update(subscribers)
        .where(S.id == sa.bindparam("b_id"))
        .values(email_key=sa.bindparam("b_key"))
    )
    after = 0
    while True:
        rows = connection.execute(
            sa.select(S.id, S.email).where(S.id > after).order_by(S.id).limit(BATCH)
        ).all()
        if not rows:
            return
        connection.execute(fill, [{"b_id": r.id, "b_key": key(r.email)} for r in rows])
        after = rows[-1].id


def _merge(connection: sa.Connection, email_key: str) -> int:
    """Make the readers of one key one reader; returns how many there were.

    The survivor is the oldest active spelling (the one whose links are in the reader's inbox),
    else the oldest; it keeps its own address, id and links. It takes the furthest cursor and
    anchor, so no article and no slot comes twice. Deliveries still outstanding are dropped:
    the merged reader is planned again from that cursor and anchor. Of the finished ones, one
    per period moves to the survivor, so the (subscriber, period) key still holds.
    """
    readers = connection.execute(
        sa.select(subscribers).where(S.email_key == email_key).order_by(S.created_at, S.id)
    ).all()
    survivor = next((r for r in readers if r.status == "active"), readers[0])
    statuses = {r.status for r in readers}
    status = next((s for s in STATUS_PRECEDENCE if s in statuses), survivor.status)
    stopped = [
        r.unsubscribed_at for r in readers if r.status == "unsubscribed" and r.unsubscribed_at
    ]
    ids = [r.id for r in readers]
    _merge_deliveries(connection, survivor.id, ids)
    connection.execute(sa.delete(subscribers).where(S.id.in_(ids), S.id != survivor.id))
    connection.execute(
        sa.update(subscribers)
        .where(S.id == survivor.id)
        .values(
            status=status,
            unsubscribed_at=max(stopped) if stopped else survivor.unsubscribed_at,
            created_at=min(r.created_at for r in readers),
            cursor=max(r.cursor for r in readers),
            anchor=max(r.anchor for r in readers),
            bounces=max(r.bounces for r in readers),
        )
    )
    return len(readers)


def _merge_deliveries(connection: sa.Connection, survivor: int, ids: Sequence[int]) -> None:
    finished = connection.execute(
        sa.select(D.id, D.subscriber_id, D.period_key, D.status).where(
            D.subscriber_id.in_(ids), D.status.in_(FINISHED_PRECEDENCE)
        )
    ).all()
    kept: dict[str, int] = {}
    for row in sorted(
        finished,
        key=lambda r: (FINISHED_PRECEDENCE.index(r.status), r.subscriber_id != survivor, r.id),
    ):
        kept.setdefault(row.period_key, row.id)
    keep = list(kept.values())
    connection.execute(sa.delete(deliveries).where(D.subscriber_id.in_(ids), D.id.not_in(keep)))
    if keep:
        connection.execute(
            sa.update(deliveries).where(D.id.in_(keep)).values(subscriber_id=survivor)
        )


def _note(line: str) -> None:
    """Tell the person running `digest db upgrade` what this migration did."""
    config = op.get_context().config
    if config is not None:
        config.attributes.setdefault("notes", []).append(line)
