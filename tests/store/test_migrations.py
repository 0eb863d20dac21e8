"""Schema migrations: old projects are upgraded in place, newer ones refused, once under a lock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from cryoweave.errors import StorageError
from cryoweave.store import Project, queries
from cryoweave.store._migrate import current_revision, revisions, upgrade
from cryoweave.store.schema import HEAD_REVISION, SCHEMA_VERSION, Base, Run

SRC = Path(__file__).resolve().parents[2] / "src"


def _pre_migration_database(url: str) -> None:
    """A project database as cryoweave made it before migrations: the tables, the version
    row, one run, no ``alembic_version``, no ``runs.queue`` column (added later by ALTER) and
    no ``runs.summary`` (revision 0002)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        Base.metadata.create_all(conn)
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN queue")
        conn.exec_driver_sql("ALTER TABLE runs DROP COLUMN summary")
        conn.execute(text("INSERT INTO meta (key, value) VALUES ('schema_version', '1')"))
        conn.execute(text(
            "INSERT INTO runs (label, protocol, schema_version, params, status, folder, "
            "created_at, stop_requested) VALUES ('old', 'cryoweave:ImportParticles', 1, '{}', "
            "'finished', 'Runs/000001_ImportParticles', 1.0, false)"))
    engine.dispose()


def _columns(project: Project, table: str) -> set[str]:
    with project.engine.connect() as conn:
        return {c["name"] for c in inspect(conn).get_columns(table)}


def _check_upgraded_and_usable(project: Project) -> None:
    with project.engine.connect() as conn:
        assert current_revision(conn) == HEAD_REVISION
    assert {"queue", "summary"} <= _columns(project, "runs")
    with project.transaction() as s:
        s.add(Run(label="new", protocol="cryoweave:Downsample", queue="gpu", folder="Runs/x"))
    runs = queries.list_runs(project)
    assert [(r["label"], r["queue"]) for r in runs] == [("old", None), ("new", "gpu")]


def test_head_revision_is_the_newest_migration():
    assert revisions()[-1] == HEAD_REVISION
    assert int(HEAD_REVISION) == SCHEMA_VERSION == len(revisions())


def test_migrations_build_exactly_the_models(tmp_path):
    """The baseline (and every later migration) gives the tables, columns and indexes that
    ``schema.py`` declares: alembic's comparison finds nothing to do."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(f"sqlite:///{tmp_path / 'm.sqlite'}")
    with engine.begin() as conn:
        upgrade(conn)
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_a_project_from_before_migrations_is_upgraded_then_used(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    _pre_migration_database(f"sqlite:///{root / 'project.sqlite'}")
    with Project.open(root) as project:
        _check_upgraded_and_usable(project)
    with Project.open(root) as again, again.reader() as s:  # a second open changes nothing
        assert s.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1


def test_a_project_at_the_baseline_is_upgraded_then_used(tmp_path):
    root = tmp_path / "base"
    root.mkdir()
    engine = create_engine(f"sqlite:///{root / 'project.sqlite'}")
    with engine.begin() as conn:
        upgrade(conn, revisions()[0])
        conn.execute(text(
            "INSERT INTO runs (label, protocol, schema_version, params, status, folder, "
            "created_at, stop_requested) VALUES ('old', 'cryoweave:ImportParticles', 1, '{}', "
            "'finished', 'Runs/000001_ImportParticles', 1.0, 0)"))
    engine.dispose()
    with Project.open(root) as project:
        _check_upgraded_and_usable(project)


def test_a_newer_revision_is_refused(tmp_path):
    Project.create(tmp_path / "p").close()
    engine = create_engine(f"sqlite:///{tmp_path / 'p' / 'project.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StorageError, match=r"schema version 9999 is newer than this cryoweave "
                                           rf"supports \({HEAD_REVISION}\); upgrade cryoweave"):
        Project.open(tmp_path / "p")


def test_processes_upgrading_one_old_project_at_once_migrate_it_once(tmp_path):
    root = tmp_path / "old"
    root.mkdir()
    _pre_migration_database(f"sqlite:///{root / 'project.sqlite'}")
    script = textwrap.dedent(f"""
        from cryoweave.store import Project, queries
        with Project.open({str(root)!r}) as project:
            print(len(queries.list_runs(project)))
    """)
    processes = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
                 for _ in range(4)]
    outcomes = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, outcomes
    assert [out.strip() for out, _ in outcomes] == ["1"] * 4
    with Project.open(root) as project:
        _check_upgraded_and_usable(project)


@pytest.mark.postgres
def test_a_postgres_project_from_before_migrations_is_upgraded(tmp_path, postgres_database):
    _pre_migration_database(postgres_database)
    with Project.open(tmp_path / "pg", postgres_database, create=True) as project:
        _check_upgraded_and_usable(project)
    engine = create_engine(postgres_database)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StorageError, match="newer than this cryoweave supports"):
        Project.open(tmp_path / "pg", postgres_database)


def test_a_new_project_is_made_at_head_exactly_as_the_migrations_make_it(tmp_path):
    """A new database gets the models' tables and alembic's version row directly (alembic is
    not imported); the result equals a database the migrations built, and alembic sees it at
    head (an upgrade changes nothing)."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(SRC)!r})
        from cryoweave.store import Project
        Project.create({str(tmp_path / 'new')!r}, None).close()
        print("alembic" in sys.modules)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False"]
    migrated = create_engine(f"sqlite:///{tmp_path / 'migrated.sqlite'}")
    with migrated.begin() as conn:
        upgrade(conn)
    new = create_engine(f"sqlite:///{tmp_path / 'new' / 'project.sqlite'}")

    def schema(engine):
        inspector = inspect(engine)
        return {table: (inspector.get_columns(table), inspector.get_pk_constraint(table),
                        inspector.get_indexes(table), inspector.get_unique_constraints(table),
                        inspector.get_foreign_keys(table))
                for table in inspector.get_table_names()}

    assert "alembic_version" in schema(new)
    assert repr(schema(new)) == repr(schema(migrated))
    with new.begin() as conn:
        assert current_revision(conn) == HEAD_REVISION
        upgrade(conn)  # at head: nothing to do
        assert current_revision(conn) == HEAD_REVISION
