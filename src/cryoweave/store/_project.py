"""A project: a folder with ``project.sqlite`` (or a database URL), ``Runs/`` and ``Cache/``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, create_engine, event, select
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from cryoweave.errors import StorageError

if TYPE_CHECKING:  # the ORM is imported by the code that writes; readers need only Core
    from sqlalchemy.orm import Session

    from cryoweave.store.schema import Run

DB_FILENAME = "project.sqlite"
CONFIG_FILENAME = "project.json"
BUSY_TIMEOUT_S = 60.0
MAX_DB_INTEGER = 2**31 - 1  # ids are INTEGER columns: 32 bits in PostgreSQL (64 in SQLite)


def _configure_sqlite(engine: Engine) -> None:
    """WAL, busy timeout, foreign keys, and ``BEGIN IMMEDIATE`` for write transactions.

    pysqlite's own transaction handling is switched off so that the begin statement is ours:
    a writer takes the write lock at ``BEGIN`` and waits (busy timeout) instead of failing
    when two processes (a producer and a consumer run) write at the same time.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("cryoweave_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enable_wal(cursor: Any) -> None:
    """Switch the database to WAL once; wait while another connection holds a lock.

    WAL is persistent, so this is a no-op after the first connection. Switching a database
    that is still in rollback mode fails at once with "database is locked" while another
    connection (a concurrent creator) holds a lock: SQLite's busy handler is not consulted
    for that switch, so we retry until ``BUSY_TIMEOUT_S``.
    """
    if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
        return
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay_s = 0.002
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay_s)
            delay_s = min(2 * delay_s, 0.1)


class Project:
    """A project folder and its database. Use :meth:`open` or :meth:`create`."""

    def __init__(self, root: Path, db_url: str, engine: Engine):
        self.root = root
        self.db_url = db_url
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"

    # -- opening --------------------------------------------------------------------------
    @staticmethod
    def exists(root: str | Path) -> bool:
        root = Path(root)
        return (root / DB_FILENAME).exists() or (root / CONFIG_FILENAME).exists()

    @classmethod
    def open(cls, root: str | Path, db_url: str | None = None, *, create: bool = False) -> Project:
        """Open the project at ``root``; with ``create`` make it (folder, database) if absent."""
        root = Path(root).resolve()
        config = root / CONFIG_FILENAME
        if db_url is None and config.exists():
            db_url = json.loads(config.read_text()).get("db_url")
        if not cls.exists(root) and db_url is None and not create:
            raise StorageError(
                f"{root} is not a cryoweave project (no {DB_FILENAME}); "
                f"create one with `cryoweave init {root}`"
            )
        if create:
            for sub in ("Runs", "Cache"):
                (root / sub).mkdir(parents=True, exist_ok=True)
        url = db_url or f"sqlite:///{root / DB_FILENAME}"
        try:
            engine = cls._make_engine(url)
            project = cls(root, url, engine)
            project._ensure_schema(create=create)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot open the project database {url}: {exc}") from exc
        if create and db_url is not None and not config.exists():
            config.write_text(json.dumps({"db_url": db_url}, indent=2) + "\n")
        return project

    @classmethod
    def create(cls, root: str | Path, db_url: str | None = None) -> Project:
        return cls.open(root, db_url, create=True)

    @staticmethod
    def _make_engine(url: str) -> Engine:
        if url.startswith("sqlite"):
            engine = create_engine(
                url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
            )
            _configure_sqlite(engine)
            return engine
        return create_engine(url, pool_pre_ping=True)

    def _ensure_schema(self, *, create: bool) -> None:
        """Create or migrate the schema (once, under the write lock, so concurrent openers
        agree); refuse a database with a newer schema than this code."""
        from cryoweave.store._migrate import ensure_schema

        with self.engine.connect() as conn:
            conn.execution_options(cryoweave_write=True)
            with conn.begin():
                if self.engine.dialect.name == "postgresql":
                    # serialise concurrent creators (SQLite does it with BEGIN IMMEDIATE)
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(727272)")
                ensure_schema(conn)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``); commits on success."""
        from sqlalchemy.orm import Session

        try:
            with self.engine.connect() as conn:
                conn.execution_options(cryoweave_write=True)
                with conn.begin(), Session(bind=conn, expire_on_commit=False) as session:
                    yield session
                    session.flush()
        except OperationalError as exc:
            raise StorageError(f"project database {self.db_url}: {exc.orig}") from exc

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read transaction (ORM session): one consistent snapshot of the database."""
        from sqlalchemy.orm import Session

        with self.engine.connect() as conn, conn.begin(), Session(bind=conn) as session:
            yield session

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read transaction on a Core connection, without the ORM (what
        :mod:`cryoweave.store.queries` reads through)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    # -- runs and folders -----------------------------------------------------------------
    @property
    def runs_dir(self) -> Path:
        return self.root / "Runs"

    @property
    def cache_dir(self) -> Path:
        return self.root / "Cache"

    def run_dir(self, run: Run) -> Path:
        return self.root / run.folder

    def find_run(self, ref: int | str) -> Run | None:
        """A run by id (int or digit string) or by label."""
        from cryoweave.store.schema import Run

        with self.reader() as s:
            run_id = run_id_of(ref)
            if run_id is not None:
                run = s.get(Run, run_id)
                if run is not None:
                    return run
            return s.scalar(select(Run).where(Run.label == str(ref)))

    def get_run(self, ref: int | str) -> Run:
        run = self.find_run(ref)
        if run is None:
            raise StorageError(no_run_message(self, ref))
        return run

    def list_runs(self) -> list[Run]:
        from cryoweave.store.schema import Run

        with self.reader() as s:
            return list(s.scalars(select(Run).order_by(Run.id)))


def run_id_of(ref: int | str) -> int | None:
    """The run id ``ref`` can be (an int or a digit string up to MAX_DB_INTEGER: a larger
    one overflows the database's integer), else None (it can still be a label)."""
    if isinstance(ref, str) and ref.isascii() and ref.isdigit():
        ref = int(ref)
    if isinstance(ref, int) and not isinstance(ref, bool) and 0 <= ref <= MAX_DB_INTEGER:
        return ref
    return None


def no_run_message(project: Project, ref: int | str) -> str:
    return f"no run {ref!r} in project {project.root}; `cryoweave runs` lists the runs"


def run_folder_name(run_id: int, protocol_name: str) -> str:
    return f"Runs/{run_id:06d}_{protocol_name}"


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
