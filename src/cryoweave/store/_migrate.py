"""Schema migrations: bring a project database to the code's schema, or refuse a newer one.

Alembic runs the scripts in ``store/migrations`` on the caller's connection, inside the
caller's write transaction (the project's lock), so two processes opening an old project at
once migrate it once. A database already at :data:`HEAD_REVISION` is recognised by one
query, without importing alembic. ``python -m cryoweave.store._migrate revision "message"``
generates a new migration from the models (for developers).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    select,
    text,
)

from cryoweave.errors import StorageError
from cryoweave.store.tables import HEAD_REVISION, SCHEMA_VERSION, meta, metadata

MIGRATIONS = Path(__file__).with_name("migrations")
log = logging.getLogger(__name__)


def _config(conn: Connection | None) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def revisions() -> list[str]:
    """The revisions this code knows, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_config(None))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current_revision(conn: Connection) -> str | None:
    """The database's alembic revision (None before migrations, or for a new database)."""
    if not conn.dialect.has_table(conn, "alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _newer(version: object, supported: object) -> StorageError:
    return StorageError(f"project database schema version {version} is newer than this "
                        f"cryoweave supports ({supported}); upgrade cryoweave")


def ensure_schema(conn: Connection) -> None:
    """Create, upgrade or accept the schema on ``conn`` (in a write transaction, locked)."""
    revision = current_revision(conn)
    if conn.dialect.has_table(conn, "meta"):
        version = conn.execute(select(meta.c.value).where(meta.c.key == "schema_version")).scalar()
        # before migrations, the version row was written with the tables: none is unknown
        if (version is None and revision is None) or int(version or 0) > SCHEMA_VERSION:
            raise _newer(version, SCHEMA_VERSION)
    if revision == HEAD_REVISION:
        return
    if revision is None and not conn.dialect.get_table_names(conn):
        _create_at_head(conn)  # a new database: no migration to run
    else:
        if revision is not None and revision not in revisions():
            raise _newer(revision, HEAD_REVISION)
        upgrade(conn)
    log.debug("project database schema: %s -> %s", revision or "(none)", HEAD_REVISION)
    conn.execute(meta.delete().where(meta.c.key == "schema_version"))
    conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))


def _create_at_head(conn: Connection) -> None:
    """The tables of the models and alembic's version row at HEAD_REVISION, as the migrations
    would leave them (a test compares the two), without importing alembic (0.2 s of every
    command that makes a project)."""
    metadata.create_all(conn)
    version = Table("alembic_version", MetaData(),
                    Column("version_num", String(32), nullable=False),
                    PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))
    version.create(conn)
    conn.execute(version.insert().values(version_num=HEAD_REVISION))


def upgrade(conn: Connection, target: str = "head") -> None:
    """Run the migrations up to ``target`` on ``conn`` (alembic's own log lines silenced)."""
    from alembic import command

    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(_config(conn), target)


def _revision(message: str) -> None:  # pragma: no cover - a developer tool
    from alembic import command
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        upgrade(conn)
        command.revision(_config(conn), message=message, autogenerate=True)


if __name__ == "__main__":  # pragma: no cover
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "revision":
        sys.exit('usage: python -m cryoweave.store._migrate revision "message"')
    _revision(sys.argv[2])
