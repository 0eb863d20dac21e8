"""ReconstructHighRes killed mid-iteration and continued; continue_from a previous run."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import numpy as np

from conftest import cryoweave_command, subprocess_env
from cryoweave.formats import read_volume
from cryoweave.plugin import registry
from cryoweave.store import ParticleSet, Project, RecordSet, VolumeSet
from cryoweave.store.schema import StepRow
from cryoweave.workflow import run_protocol
from refinement_data import lowpassed_start, simulated


def finished_steps(project, run_id):
    with project.reader() as s:
        return {r.key: r.finished_at for r in
                s.query(StepRow).filter_by(run_id=run_id, status="done")}


def test_killed_in_iteration_two_and_continued(tmp_path):
    project_dir = tmp_path / "p"
    _, simulation, truth = simulated(project_dir, n=800, box=40, snr=0.2)
    start = lowpassed_start(project_dir, truth, 3.0)
    params = {"particles": {"run": simulation.run_id, "output": "particles"},
              "initial_volumes": start, "alignment": "global", "iterations": 3,
              "max_target_resolution_a": "12"}
    (tmp_path / "params.json").write_text(json.dumps(params))
    process = subprocess.Popen(cryoweave_command("run-protocol", "ReconstructHighRes",
                                                 "params.json", "--project", "p", "--quiet",
                                                 "--label", "refine"),
                               cwd=tmp_path, env=subprocess_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    run_folder = project_dir / "Runs" / "000003_ReconstructHighRes"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (run_folder / "extra/iter_02/schedule.json").exists():  # iteration 2 under way
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert not (run_folder / "extra/iter_03/result.json").exists()
    with Project.open(project_dir) as project:
        run_id = project.get_run("refine").id
        before = finished_steps(project, run_id)
    assert "iter01/evaluate" in before
    resumed = subprocess.run(cryoweave_command("run-protocol", "--continue", "refine",
                                               "--project",
                                               "p", "--quiet", "--json"),
                             cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    with Project.open(project_dir) as project:
        after = finished_steps(project, run_id)
        for key, finished_at in before.items():
            assert after[key] == finished_at, f"{key} was redone"
        outputs = json.loads(resumed.stdout)["outputs"]
        records = RecordSet(project, outputs["fsc"]["set"]).to_frame()["data"].tolist()
        assert [r["iteration"] for r in records] == [1, 2, 3]  # each iteration published once
        # an uninterrupted run of the same parameters gives the same map
        _, reference = run_protocol(project_dir, registry().get("ReconstructHighRes"), params)
        ours = read_volume(VolumeSet(project, outputs["volume"]["set"]).to_frame()
                           .iloc[0]["path"])[0]
        theirs = read_volume(VolumeSet(project, reference.outputs["volume"]).to_frame()
                             .iloc[0]["path"])[0]
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max())


def test_continue_from_switches_global_to_local_and_keeps_halves(tmp_path):
    project_dir = tmp_path / "p"
    project, simulation, truth = simulated(project_dir, n=600, box=40, snr=0.3)
    start = lowpassed_start(project_dir, truth, 3.0)
    _, first = run_protocol(project_dir, registry().get("ReconstructHighRes"), {
        "particles": {"run": simulation.run_id, "output": "particles"},
        "initial_volumes": start, "alignment": "global", "iterations": 1,
        "split": "stochastic", "max_target_resolution_a": "12"})
    assert first.status == "finished", first.error
    _, second = run_protocol(project_dir, registry().get("ReconstructHighRes"), {
        "continue_from": first.run_id, "alignment": "local", "iterations": 1})
    assert second.status == "finished", second.error
    halves_first = ParticleSet(project, first.outputs["particles"]).to_frame() \
        .set_index("item_id")["half"]
    halves_second = ParticleSet(project, second.outputs["particles"]).to_frame() \
        .set_index("item_id")["half"]
    assert (halves_second == halves_first.loc[halves_second.index]).all()
    record = RecordSet(project, second.outputs["fsc"]).to_frame()["data"].iloc[0]
    assert record["alignment"] == "local"
    first_record = RecordSet(project, first.outputs["fsc"]).to_frame()["data"].iloc[0]
    assert record["previous_resolution_a"] == first_record["resolution_a"]
