"""topics: each article's topic key, indexed, so planning can ask whether a reader's window
holds anything in their topics; and each delivery's topics, fixed at planning as its window is

Revision ID: 0008
Revises: 0007
"""

import re

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# domain.topic_key as it was when this migration was written, frozen here: a later change to
# the function must not change what this migration did.
_NOT_A_WORD = re.compile(r"[\W_]+")


def _topic_key(category: str) -> str:
    words = _NOT_A_WORD.sub(" ", category.casefold().replace("&", " and "))
    return " ".join(words.split())


def upgrade() -> None:
    op.add_column(
        "articles", sa.Column("topic", sa.String(length=400), nullable=False, server_default="")
    )
    articles = sa.table("articles", sa.column("category", sa.String), sa.column("topic", sa.String))
    conn = op.get_bind()
    # One UPDATE per distinct category: a site has dozens of categories, not one per article.
    categories = conn.scalars(sa.select(articles.c.category).distinct()).all()
    for category in categories:
        conn.execute(
            articles.update()
            .where(articles.c.category == category)
            .values(topic=_topic_key(category))
        )
    op.create_index("ix_articles_topic", "articles", ["topic", "id"])
    # NULL for the deliveries already planned: every topic, as their readers had.
    op.add_column("deliveries", sa.Column("topics", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("topics")
    op.drop_index("ix_articles_topic", table_name="articles")
    with op.batch_alter_table("articles") as batch:  # SQLite rebuilds the table
        batch.drop_column("topic")
