"""Alembic environment: digest passes its own connection in; nothing is read from alembic.ini."""

from alembic import context

from digest.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
