"""Alembic environment: migrate the connection that :mod:`cryoweave.store._migrate` passes in.

The caller holds the project's write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL advisory
lock) and an open transaction; the migrations run inside it, so concurrent openers serialise
and a failed migration leaves the database as it was.
"""

from alembic import context

from cryoweave.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
