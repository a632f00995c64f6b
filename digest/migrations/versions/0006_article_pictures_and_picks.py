"""article pictures and editors' picks: each article's image URL and whether it is featured

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("articles", sa.Column("image_url", sa.String(length=2000), nullable=True))
    op.add_column(
        "articles",
        sa.Column("featured", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    with op.batch_alter_table("articles") as batch:  # SQLite rebuilds the table
        batch.drop_column("featured")
        batch.drop_column("image_url")
