"""A finished run leaves no scratch: tmp/ is emptied and partial files of killed writes are
removed; a run that did not finish keeps its tmp/ for --continue."""

from __future__ import annotations

from cryoweave.plugin import registry
from cryoweave.store import Project
from cryoweave.workflow import Runner, create_run, validate_run


def plant_leftovers(folder):
    (folder / "tmp" / "scratch").mkdir()
    (folder / "tmp" / "scratch" / "a.npz").write_bytes(b"a")
    (folder / "tmp" / "b.npz").write_bytes(b"b")
    killed_write = folder / "extra" / ".out_002.txt.0badc0de.part"  # as atomic_path leaves it
    killed_write.write_text("partial")
    look_alike = folder / "extra" / ".notes.part"  # not atomic_path's name: kept
    look_alike.write_text("mine")
    return killed_write, look_alike


def new_run(project, params):
    protocol = registry().get("ToySteps")
    run_id = create_run(project, validate_run(project, protocol, params))
    return run_id, project.root / project.get_run(run_id).folder


def test_finishing_removes_tmp_and_partial_writes_and_keeps_results(tmp_path):
    with Project.create(tmp_path / "p") as project:
        run_id, folder = new_run(project, {"n_steps": 3})
        killed_write, look_alike = plant_leftovers(folder)
        assert Runner(project, run_id).execute().status == "finished"
        assert list((folder / "tmp").iterdir()) == []
        assert not killed_write.exists() and look_alike.read_text() == "mine"
        assert sorted(p.name for p in (folder / "extra").glob("out_*.txt")) == [
            "out_000.txt", "out_001.txt", "out_002.txt"]


def test_a_run_that_did_not_finish_keeps_its_tmp(tmp_path):
    with Project.create(tmp_path / "p") as project:
        run_id, folder = new_run(project, {"n_steps": 3, "fail_step": 1})
        killed_write, _ = plant_leftovers(folder)
        assert Runner(project, run_id).execute().status == "failed"
        assert (folder / "tmp" / "b.npz").read_bytes() == b"b" and killed_write.exists()
