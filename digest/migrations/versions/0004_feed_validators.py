"""feed validators: the ETag and Last-Modified of each feed's last imported answer

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("feeds", sa.Column("etag", sa.String(length=255), nullable=True))
    op.add_column("feeds", sa.Column("last_modified", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feeds") as batch:  # SQLite rebuilds the table
        batch.drop_column("last_modified")
        batch.drop_column("etag")
