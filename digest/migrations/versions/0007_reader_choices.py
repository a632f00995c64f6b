"""reader choices: topics, a pause, and the reader's own send time and weekday

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Every column is NULL for existing readers: every topic, no pause, the site's schedule.
    op.add_column("subscribers", sa.Column("topics", sa.Text(), nullable=True))
    op.add_column("subscribers", sa.Column("paused_until", sa.DateTime(), nullable=True))
    op.add_column("subscribers", sa.Column("send_time", sa.String(length=5), nullable=True))
    op.add_column("subscribers", sa.Column("send_weekday", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscribers") as batch:  # SQLite rebuilds the table
        batch.drop_column("send_weekday")
        batch.drop_column("send_time")
        batch.drop_column("paused_until")
        batch.drop_column("topics")
