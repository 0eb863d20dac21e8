"""Shared fixtures: the array namespace `xp` and the real-data folder."""

from __future__ import annotations

from pathlib import Path

import numpy
import pytest

from cryoweave.engine import cupy_available


def _namespaces() -> list:
    params = [pytest.param(numpy, id="numpy")]
    if cupy_available():
        import cupy

        params.append(pytest.param(cupy, id="cupy", marks=pytest.mark.gpu))
    return params


@pytest.fixture(params=_namespaces())
def xp(request: pytest.FixtureRequest):
    """The array module under test: numpy always, cupy (marked `gpu`) when a GPU is usable."""
    return request.param


@pytest.fixture
def real_data_dir() -> Path:
    """`../shared/data/real` next to the project root (files written by other tools).

    ``CRYOWEAVE_REAL_DATA`` points elsewhere (e.g. for a checkout in another folder).
    """
    path = real_data_path()
    if not path.is_dir():
        pytest.skip(real_data_skip_reason(path))
    return path


def real_data_path() -> Path:
    """Where the real-data fixtures live: $CRYOWEAVE_REAL_DATA or ../shared/data/real."""
    import os

    default = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    return Path(os.environ.get("CRYOWEAVE_REAL_DATA", default)).resolve()


def real_data_skip_reason(path: Path) -> str:
    return (f"real-data fixtures not found: they live in {path} (the folder shared/data/real "
            "beside the project root, small files from other projects' test suites); put them "
            "there or set CRYOWEAVE_REAL_DATA to their folder")


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say once, at the end, where the real-data fixtures live when their tests skipped."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "real-data fixtures not found" in str(getattr(r, "longrepr", ""))]
    if skipped:
        terminalreporter.write_line(
            f"{len(skipped)} real_data tests skipped: "
            f"{real_data_skip_reason(real_data_path())}", yellow=True)


# -- projects, plugins and subprocesses --------------------------------------------------------
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(autouse=True)
def toy_plugins(monkeypatch: pytest.MonkeyPatch):
    """Make the test-only protocols in tests/toy_protocols.py discoverable."""
    from cryoweave.plugin import registry

    monkeypatch.syspath_prepend(str(TESTS_DIR))
    monkeypatch.setenv("CRYOWEAVE_PLUGINS", "toy_protocols:PLUGIN")
    registry(refresh=True)
    yield
    registry(refresh=True)


@pytest.fixture
def tmp_project(tmp_path: Path):
    """A fresh project (SQLite) in a temporary folder."""
    from cryoweave.store import Project

    project = Project.create(tmp_path / "project")
    yield project
    project.close()


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `cryoweave` subprocesses that see the toy plugins."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["CRYOWEAVE_PLUGINS"] = "toy_protocols:PLUGIN"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cryoweave_command(*args: str) -> list[str]:
    import sys

    return [sys.executable, "-m", "cryoweave.cli", *args]


@pytest.fixture
def run_cli(tmp_path: Path):
    """Run the real `cryoweave` command in a subprocess; returns CompletedProcess."""
    import subprocess

    def run(*args: str, cwd: Path | None = None, timeout: float = 120, **env: str):
        return subprocess.run(cryoweave_command(*args), cwd=cwd or tmp_path,
                              env=subprocess_env(**env), capture_output=True, text=True,
                              timeout=timeout)

    return run


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server (initdb + pg_ctl); a missing server is `missing_service`."""
    import glob
    import os
    import shutil
    import socket
    import subprocess
    import tempfile

    # on PATH, or where Debian's postgresql package puts them
    search = os.pathsep.join([os.environ.get("PATH", ""),
                              *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)])
    initdb, pg_ctl = shutil.which("initdb", path=search), shutil.which("pg_ctl", path=search)
    if not initdb or not pg_ctl:
        missing_service("PostgreSQL server binaries (initdb, pg_ctl) not found")
    pytest.importorskip("psycopg2")
    # not under pytest's tmp root: that is private to this user and the server runs as postgres
    folder = Path(tempfile.mkdtemp(prefix="cryoweave-pg-"))
    data = folder / "data"
    prefix: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        if shutil.which("runuser") is None:
            missing_service("running as root without runuser")
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"],
                       check=True, capture_output=True, timeout=120)
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w",
                        "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True, timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, KeyError) as exc:
        missing_service(f"could not start a PostgreSQL server: {exc}")
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_url):
    """The URL of a new, empty database on the throwaway PostgreSQL server."""
    import uuid

    import sqlalchemy

    name = f"cw_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + "/" + name


# -- real services (Dask, Slurm) ---------------------------------------------------------------
REQUIRE_SERVICES_ENV = "CRYOWEAVE_REQUIRE_SERVICES"


def missing_service(reason: str) -> None:
    """A service a test needs is not available: a skip locally, a failure in CI.

    ``.ci/run`` sets ``CRYOWEAVE_REQUIRE_SERVICES=1`` so that a missing Slurm or Dask is a
    failure there, not a silent skip.
    """
    import os

    if os.environ.get(REQUIRE_SERVICES_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_SERVICES_ENV}=1: required services must be present)",
                    pytrace=False)
    pytest.skip(reason)
