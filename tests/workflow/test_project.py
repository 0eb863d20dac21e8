"""Project folders and database setup."""

from __future__ import annotations

import sqlite3

import pytest

from cryoweave.errors import StorageError
from cryoweave.workflow import Project
from cryoweave.workflow._schema import Meta


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


def test_concurrent_creation_on_sqlite(tmp_path):
    import threading

    errors = []

    def create():
        try:
            Project.open(tmp_path / "p", create=True).close()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    with Project.open(tmp_path / "p") as project, project.reader() as s:
        assert s.query(Meta).count() == 1
