"""deliveries: one partial index per kind of claimable row, so a claim costs the same at any size

Revision ID: 0005
Revises: 0004

The claim took the lowest ids among pending-and-due rows and expired leases through one index on
(status, next_attempt_at), sorting every claimable row to keep 500 of them. Now pending rows are
claimed the longest due first from an index of pending rows only, in (next_attempt_at, id) order,
and expired leases from an index of rows being sent, by lease_until: each a range scan that stops
at the batch's size. Only indexes change; no row is touched.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'pending'")
SENDING = sa.text("status = 'sending'")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_due",
        "deliveries",
        ["next_attempt_at", "id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_deliveries_leased",
        "deliveries",
        ["lease_until"],
        sqlite_where=SENDING,
        postgresql_where=SENDING,
    )
    op.drop_index("ix_deliveries_claimable", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_claimable", "deliveries", ["status", "next_attempt_at"])
    op.drop_index("ix_deliveries_leased", table_name="deliveries")
    op.drop_index("ix_deliveries_due", table_name="deliveries")
