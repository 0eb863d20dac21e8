"""A run killed with SIGKILL at random moments and continued ends exactly like an
uninterrupted run, without redoing steps that had finished (real subprocesses)."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time

import pytest

from conftest import cryoweave_command, subprocess_env
from cryoweave.store import Project, RecordSet
from cryoweave.store.schema import StepRow

PARAMS = {"n_steps": 24, "items_per_step": 3, "sleep_s": 0.04}
_rng = random.Random(20261121)
# seconds after the run starts running; an uninterrupted run takes about 0.7 s
KILL_DELAYS_S = sorted(_rng.uniform(0.0, 0.7) for _ in range(5))


def wait_until_running(project_dir, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (project_dir / "project.sqlite").exists():
            with Project.open(project_dir) as project:
                run = project.find_run(1)
                if run is not None and run.status == "running":
                    return
        time.sleep(0.02)
    raise AssertionError("the run never started")


def outputs(project_dir):
    with Project.open(project_dir) as project:
        frame = RecordSet(project, 1).to_frame().sort_values("item_id")
        state = RecordSet(project, 1).state
        files = {p.name: p.read_text() for p in
                 sorted((project_dir / "Runs/000001_ToySteps/extra").glob("out_*.txt"))}
    return frame["item_id"].tolist(), frame["data"].tolist(), state, files


def executions(project_dir) -> list[int]:
    log = project_dir / "Runs/000001_ToySteps/extra/executions.log"
    return [int(x) for x in log.read_text().split()] if log.exists() else []


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference")
    (folder / "params.json").write_text(json.dumps(PARAMS))
    done = subprocess.run(cryoweave_command("run-protocol", "ToySteps", "params.json",
                                            "--project", "proj", "--workers", "2", "--quiet"),
                          cwd=folder, env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return outputs(folder / "proj")


@pytest.mark.parametrize("delay_s", KILL_DELAYS_S, ids=lambda d: f"kill@{d:.2f}s")
def test_sigkill_then_continue_matches_uninterrupted(tmp_path, reference, delay_s):
    (tmp_path / "params.json").write_text(json.dumps(PARAMS))
    args = ("run-protocol", "ToySteps", "params.json", "--project", "proj", "--workers", "2",
            "--quiet")
    process = subprocess.Popen(cryoweave_command(*args), cwd=tmp_path, env=subprocess_env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    project_dir = tmp_path / "proj"
    wait_until_running(project_dir)
    time.sleep(delay_s)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with Project.open(project_dir) as project, project.reader() as s:
        done_before = {r.key for r in s.query(StepRow).filter_by(run_id=1, status="done")}
    ran_before = len(executions(project_dir))

    resumed = subprocess.run(cryoweave_command("run-protocol", "--continue", "1", "--project",
                                               "proj", "--workers", "2", "--json", "--quiet"),
                             cwd=tmp_path, env=subprocess_env(), capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["status"] == "finished"
    assert report["outputs"]["records"]["size"] == 72

    assert outputs(project_dir) == reference
    rerun = executions(project_dir)[ran_before:]
    redone = {f"work/{i:03d}" for i in rerun} & done_before
    assert not redone, f"finished steps were redone: {sorted(redone)}"
    assert len(set(executions(project_dir))) == PARAMS["n_steps"]
