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
