"""The read queries the GUI browses a project with: runs, lineage, pages, change marker."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cryoweave.errors import ParamError
from cryoweave.store import Project, queries
from cryoweave.store.schema import Run
from cryoweave.workflow import stop
from gui.conftest import make_project


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    with Project.open(make_project(tmp_path_factory.mktemp("queries"))) as opened:
        yield opened


def test_runs_lineage_and_dependents(project):
    runs = queries.list_runs(project)
    assert [(r["id"], r["label"], r["status"]) for r in runs] == [
        (1, "small:particles", "finished"), (2, "small", "finished")]
    assert runs[1]["outputs"] == [{"set": 2, "name": "particles", "kind": "particles",
                                   "state": "closed", "version": runs[1]["outputs"][0]["version"]}]
    assert [r["id"] for r in queries.list_runs(project, "IMPORTPART")] == [1]
    assert queries.lineage(project) == [{"from": 1, "output": "particles", "to": 2,
                                         "input": "particles", "set": 1}]
    assert queries.dependents(project, 1) == [2] and queries.dependents(project, 2) == []


def test_set_pages_sort_by_typed_columns_only(project):
    page = queries.set_page(project, 1, offset=5, limit=10, sort="defocus_u_a", descending=True)
    column = page["columns"].index("defocus_u_a")
    values = np.array([row[column] for row in page["rows"]])
    assert len(values) == 10 and np.all(np.diff(values) <= 0) and page["total"] == 60
    ascending = queries.set_page(project, 1, limit=500, sort="defocus_u_a")["rows"]
    assert [row[column] for row in ascending][::-1][5:15] == values.tolist()
    assert queries.set_page(project, 1, limit=10**6)["limit"] == queries.PAGE_LIMIT_MAX
    with pytest.raises(ParamError, match="sortable columns"):
        queries.set_page(project, 1, sort="item_id; drop table runs")
    item = queries.set_item(project, 1, 7)
    assert item["item_id"] == 7 and item["kind"] == "particles" and item["image_index"] == 6


def test_change_marker_follows_events_and_dead_processes(project):
    before = queries.change_marker(project)
    stop(project, 2)  # adds an event
    assert queries.change_marker(project)["event"] == before["event"] + 1
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with project.transaction() as s:
        run = s.get(Run, 2)
        run.status, run.pid, run.host = "running", dead.pid, None
    try:
        marker = queries.change_marker(project)
        assert marker["gone"] == [2]
        row = queries.list_runs(project, "small")[-1]
        assert row["process_gone"] and row["state"].startswith("running (process gone")
        assert [r["id"] for r in queries.streaming_status(project)["runs"]] == [2]
    finally:
        with project.transaction() as s:
            s.get(Run, 2).status = "finished"


@pytest.mark.parametrize("sort,descending", [("item_id", False), ("defocus_u_a", True),
                                             ("coord_x_px", False)])
def test_pages_read_from_either_end_are_the_same_rows(project, sort, descending):
    everything = queries.set_page(project, 1, limit=500, sort=sort, descending=descending)
    rows = everything["rows"]
    assert len(rows) == 60
    for offset, limit in [(0, 7), (25, 10), (31, 7), (50, 20), (55, 3), (59, 1), (60, 5),
                          (70, 5)]:
        page = queries.set_page(project, 1, offset=offset, limit=limit, sort=sort,
                                descending=descending, total=60)
        assert page["rows"] == rows[offset:offset + limit], (offset, limit)


def _sorted_page_plan(project, column):
    from sqlalchemy import text

    with project.engine.connect() as conn:
        return " ".join(str(r[-1]) for r in conn.execute(text(
            f"EXPLAIN QUERY PLAN SELECT item_id FROM particles WHERE set_id = 2 "
            f"ORDER BY {column} DESC, item_id DESC LIMIT 100")))


def test_a_sorted_page_creates_its_index_once_on_an_existing_project(tmp_path):
    from sqlalchemy import inspect

    with Project.open(make_project(tmp_path)) as project:  # made without the sort indexes
        assert "TEMP B-TREE" in _sorted_page_plan(project, "score")  # sorts the whole set
        before = queries.set_page(project, 2, limit=500, sort="score", descending=True)
        assert queries.ensure_sort_index(project, 2, "score") == "ix_particles_sort_score"
        assert queries.ensure_sort_index(project, 2, "score") == "ix_particles_sort_score"
        plan = _sorted_page_plan(project, "score")
        assert "ix_particles_sort_score" in plan and "TEMP B-TREE" not in plan, plan
        assert queries.set_page(project, 2, limit=500, sort="score", descending=True) == before
        names = [i["name"] for i in inspect(project.engine).get_indexes("particles")]
        assert names.count("ix_particles_sort_score") == 1
        # the primary key serves item order; bad columns and missing sets make no index
        assert queries.ensure_sort_index(project, 2, "item_id") is None
        assert queries.ensure_sort_index(project, 2, "score; drop table runs") is None
        assert queries.ensure_sort_index(project, 999, "score") is None


def test_the_sort_index_is_made_on_postgresql(tmp_path, postgres_database):
    import pandas as pd
    from sqlalchemy import inspect

    from cryoweave.store import ParticleSet
    from cryoweave.store.schema import SetRow

    with Project.create(tmp_path / "p", postgres_database) as project:
        with project.transaction() as s:
            s.add(SetRow(name="particles", kind="particles", state="closed", version=1,
                         properties={}))
        ParticleSet(project, 1).append(pd.DataFrame({
            "item_id": [1, 2, 3], "image_path": ["a.mrcs"] * 3, "image_index": [0, 1, 2],
            "defocus_u_a": [2e4, 1e4, 3e4]}))
        assert queries.ensure_sort_index(project, 1, "defocus_u_a") == \
            "ix_particles_sort_defocus_u_a"
        assert "ix_particles_sort_defocus_u_a" in \
            [i["name"] for i in inspect(project.engine).get_indexes("particles")]
        page = queries.set_page(project, 1, sort="defocus_u_a", descending=True)
        assert [row[0] for row in page["rows"]] == [3, 1, 2]
