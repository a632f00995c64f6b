"""notices: the bounces, delays, complaints and mailto unsubscribes that come back after sending

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # subscribers.status gains the value "complained": a String(12) holds it, nothing to change.
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=12), nullable=False),
        sa.Column("subscriber_id", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.ForeignKeyConstraint(["subscriber_id"], ["subscribers.id"], ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["delivery_id"], ["deliveries.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("fingerprint"),
    )
    op.create_index("ix_notices_received_at", "notices", ["received_at"])
    op.create_index("ix_notices_subscriber_id", "notices", ["subscriber_id"])
    # A report that names its digest by Message-ID only (no VERP tag) finds it by this.
    op.create_index("ix_deliveries_message_id", "deliveries", ["message_id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_message_id", table_name="deliveries")
    op.drop_index("ix_notices_subscriber_id", table_name="notices")
    op.drop_index("ix_notices_received_at", table_name="notices")
    op.drop_table("notices")
    # A complained reader stays unsubscribed: the status the code before 0009 knows.
    op.execute("UPDATE subscribers SET status = 'unsubscribed' WHERE status = 'complained'")
