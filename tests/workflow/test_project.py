"""Project folders and database setup."""

from __future__ import annotations

import sqlite3

import pytest

from cryoweave.errors import StorageError
from cryoweave.store import Project
from cryoweave.store.schema import Meta


def test_create_makes_folders_and_wal_database(tmp_path):
    with Project.create(tmp_path / "p") as project:
        assert (project.root / "Runs").is_dir() and (project.root / "Cache").is_dir()
        assert project.is_sqlite
    conn = sqlite3.connect(tmp_path / "p" / "project.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_open_missing_project_says_how_to_create(tmp_path):
    with pytest.raises(StorageError, match="cryoweave init"):
        Project.open(tmp_path / "nothing")


def test_newer_schema_is_refused(tmp_path):
    with Project.create(tmp_path / "p") as project, project.transaction() as s:
        s.get(Meta, "schema_version").value = "999"
    with pytest.raises(StorageError, match="newer"):
        Project.open(tmp_path / "p")


@pytest.mark.postgres
def test_postgres_url_is_remembered(tmp_path, postgres_url):
    with Project.create(tmp_path / "p", postgres_url) as project:
        assert project.engine.dialect.name == "postgresql"
    with Project.open(tmp_path / "p") as again:
        assert again.db_url == postgres_url
        assert not (tmp_path / "p" / "project.sqlite").exists()


@pytest.mark.postgres
def test_concurrent_creation_on_postgres(tmp_path, postgres_database):
    import threading

    url = postgres_database
    errors = []

    def create(i):
        try:
            Project.create(tmp_path / f"p{i}", url).close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors


def test_open_waits_for_a_creator_holding_a_rollback_mode_database(tmp_path):
    """The race behind the flaky concurrent creation: another creator holds a lock while the
    file is still in rollback mode, and switching to WAL then fails at once (no busy wait)."""
    import threading

    root = tmp_path / "p"
    root.mkdir()
    holder = sqlite3.connect(root / "project.sqlite", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE other_creator (i INTEGER)")
    release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    release.start()
    try:
        with Project.open(root, create=True) as project, project.reader() as s:
            assert s.query(Meta).count() == 1
    finally:
        release.join()
        holder.close()
    conn = sqlite3.connect(root / "project.sqlite")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_concurrent_creation_on_sqlite(tmp_path):
    import threading

    errors = []

    def create(trial):
        try:
            Project.open(tmp_path / f"p{trial}", create=True).close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for trial in range(10):
        threads = [threading.Thread(target=create, args=(trial,)) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
    with Project.open(tmp_path / "p9") as project, project.reader() as s:
        assert s.query(Meta).count() == 1
