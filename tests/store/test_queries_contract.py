"""The read API (``cryoweave.store.queries``), one contract for every database backend.

The same project (an implicit import of 60 particles feeding a Downsample run) is built on
SQLite and on PostgreSQL (the throwaway server of tests/conftest.py), and every query the
CLI and the GUI use must answer the same on both.
"""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from cryoweave.errors import ParamError, StorageError
from cryoweave.store import queries
from cryoweave.workflow import stop

N_PARTICLES = 60


def _build(root, db_url):
    from cryoweave.demo.synthetic import write_particles
    from cryoweave.plugin import registry
    from cryoweave.workflow import run_protocol

    data = root / "data"
    data.mkdir(parents=True)
    star = write_particles(data, N_PARTICLES, 48, 1.5, np.random.default_rng(0))
    project, summary = run_protocol(root / "project", registry().get("Downsample"),
                                    {"particles": str(star), "box_px": 32}, label="small",
                                    db_url=db_url)
    assert summary.status == "finished", summary.error
    return project


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres",
                                                                marks=pytest.mark.postgres)])
def project(request, tmp_path_factory):
    db_url = None
    if request.param == "postgres":
        db_url = request.getfixturevalue("postgres_module_database")
    project = _build(tmp_path_factory.mktemp(request.param), db_url)
    dialect = {"sqlite": "sqlite", "postgres": "postgresql"}[request.param]
    assert project.engine.dialect.name == dialect
    yield project
    project.close()


@pytest.fixture(scope="module")
def postgres_module_database(postgres_url):
    import uuid

    import sqlalchemy

    name = f"cw_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return postgres_url.rsplit("/", 1)[0] + "/" + name


def test_runs_with_status_protocol_label_timings_and_output_sizes(project):
    runs = queries.list_runs(project, sizes=True)
    assert [(r["id"], r["label"], r["protocol_name"], r["status"], r["state"])
            for r in runs] == [(1, "small:particles", "ImportParticles", "finished", "finished"),
                               (2, "small", "Downsample", "finished", "finished")]
    for run in runs:
        started = datetime.datetime.fromisoformat(run["started_at"])
        finished = datetime.datetime.fromisoformat(run["finished_at"])
        assert started <= finished and run["duration_s"] >= 0
        assert run["steps"] and set(run["steps"]) == {"done"}
        assert [(o["name"], o["kind"], o["state"], o["size"]) for o in run["outputs"]] == [
            ("particles", "particles", "closed", N_PARTICLES)]
    assert [r["id"] for r in queries.list_runs(project, run_ids=[2, 1])] == [2, 1]
    assert [r["id"] for r in queries.list_runs(project, "downs")] == [2]
    assert "size" not in queries.list_runs(project)[0]["outputs"][0]


def test_one_run_steps_devices_results_outputs_and_files(project):
    counts = queries.step_counts(project, 2)
    steps = queries.run_steps(project, 2)
    assert counts == {"done": len(steps)} and all(s["status"] == "done" for s in steps)
    assert all(s["seconds"] is None or s["seconds"] >= 0 for s in steps)
    assert set(queries.step_results(project, 2)) == {s["key"] for s in steps}
    devices = queries.step_devices(project, 2)
    assert set(devices) <= {"cpu", "gpu"}
    assert sorted(k for keys in devices.values() for k in keys) <= sorted(s["key"] for s in steps)
    assert queries.failed_items(project, 2) == (0, None)
    outputs = queries.run_outputs(project, 2, sizes=True)
    assert [(o["set"], o["name"], o["size"]) for o in outputs] == [(2, "particles", N_PARTICLES)]
    files = queries.set_files(project, 2)
    assert files and all(f.endswith(".mrcs") for f in files) and files == sorted(files)
    assert queries.run_outputs(project, 99) == [] and queries.step_counts(project, 99) == {}


def test_one_run_by_id_or_label_with_its_stored_summary(project):
    by_id, by_label = queries.get_run(project, 2), queries.get_run(project, "small")
    assert by_id == by_label and queries.get_run(project, "2") == by_id
    assert (by_id.id, by_id.label, by_id.status) == (2, "small", "finished")
    assert by_id.params["box_px"] and by_id.summary["particles"] == N_PARTICLES
    assert [r.id for r in queries.run_records(project)] == [1, 2]
    assert queries.find_run(project, "no such run") is None
    with pytest.raises(StorageError, match=r"no run 'nope' in project .*`cryoweave runs`"):
        queries.get_run(project, "nope")
    # an id beyond the database's integers is no run (SQLite would raise OverflowError,
    # PostgreSQL "out of range for type integer" from 2**31)
    for huge in (2**70, str(2**70), -(2**70), 2**31, str(2**63)):
        assert queries.find_run(project, huge) is None and project.find_run(huge) is None
    with pytest.raises(StorageError, match="no run 1180591620717411303424"):
        project.get_run(2**70)


def test_events_are_oldest_first_and_filtered_by_level(project):
    before = queries.run_events(project, 2)
    stop(project, 2)  # one new info event
    after = queries.run_events(project, 2)
    assert after[:len(before)] == before and after[-1]["kind"] == "stop_requested"
    assert [e["id"] for e in after] == sorted(e["id"] for e in after)
    assert queries.run_events(project, 2, after_id=before[-1]["id"] if before else 0) == \
        after[len(before):]
    assert queries.run_events(project, 2, level="error") == []
    assert all(e["level"] == "info" for e in queries.run_events(project, 2, level="info"))
    assert queries.change_marker(project)["event"] == after[-1]["id"]


def test_lineage_edges_and_dependents(project):
    assert queries.lineage(project) == [{"from": 1, "output": "particles", "to": 2,
                                         "input": "particles", "set": 1}]
    assert queries.dependents(project, 1) == [2] and queries.dependents(project, 2) == []
    picker = queries.compatible_outputs(project, "particles")
    assert [(o["set"], o["run"], o["size"]) for o in picker] == [(1, 1, N_PARTICLES),
                                                                  (2, 2, N_PARTICLES)]


def test_set_pages_offset_limit_sort_and_filter(project):
    info = queries.set_info(project, 2)
    assert info["size"] == N_PARTICLES and info["kind"] == "particles"
    everything = queries.set_page(project, 2, limit=500, sort="defocus_u_a")
    column = everything["columns"].index("defocus_u_a")
    values = [r[column] for r in everything["rows"]]
    assert len(values) == N_PARTICLES and values == sorted(values)
    for offset, limit, descending in [(0, 7, False), (25, 10, True), (55, 10, False)]:
        page = queries.set_page(project, 2, offset=offset, limit=limit, sort="defocus_u_a",
                                descending=descending)
        rows = everything["rows"][::-1] if descending else everything["rows"]
        assert page["rows"] == rows[offset:offset + limit] and page["total"] == N_PARTICLES
    half = everything["columns"].index("half")
    halves = {r[half] for r in everything["rows"]}
    for value in halves:
        page = queries.set_page(project, 2, limit=500, where={"half": value})
        expected = [r for r in sorted(everything["rows"], key=lambda r: r[0])
                    if r[half] == value]
        assert page["rows"] == expected and page["total"] == len(expected)
    with pytest.raises(ParamError, match="cannot filter by 'nope'"):
        queries.set_page(project, 2, where={"nope": 1})
    with pytest.raises(ParamError, match="sortable columns"):
        queries.set_page(project, 2, sort="item_id; drop table runs")
    with pytest.raises(StorageError, match="does not exist"):
        queries.set_page(project, 99)
    item = queries.set_item(project, 2, everything["rows"][0][0])
    assert item["kind"] == "particles" and item["defocus_u_a"] == values[0]
