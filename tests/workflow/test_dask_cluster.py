"""Runs on a real ``dask scheduler`` with ``dask worker`` processes on 127.0.0.1.

Faults are real: a worker is SIGKILLed while it runs a step, the scheduler is SIGKILLed
mid-run. Each test starts and stops its own services by PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import select

from conftest import cryoweave_command, missing_service, subprocess_env
from cryoweave.formats import read_volume
from cryoweave.plugin import registry
from cryoweave.store import Project, RecordSet, VolumeSet
from cryoweave.store.schema import StepRow
from cryoweave.workflow import run_protocol
from services import DaskCluster, stop_process, wait_until

RUN_TIMEOUT_S = 120  # only bounds a failing test


@pytest.fixture
def dask_cluster(tmp_path):
    try:
        import distributed  # noqa: F401
    except ImportError:
        missing_service("dask distributed is not installed")
    folder = tmp_path / "dask"
    folder.mkdir()
    cluster = DaskCluster(folder)
    yield cluster
    cluster.stop()


def project_with_queue(folder: Path, address: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cryoweave.yaml").write_text(yaml.safe_dump(
        {"queues": {"cluster": {"kind": "dask", "address": address}}}))
    return folder


def cli(*args: str, xdg: Path, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(cryoweave_command(*args), env=subprocess_env(XDG_CONFIG_HOME=str(xdg)),
                          capture_output=True, text=True, timeout=timeout)


def records_of(project: Project, run_ref: str) -> list:
    run = project.get_run(run_ref)
    with project.reader() as s:
        from cryoweave.store.schema import SetRow

        set_id = s.scalar(select(SetRow.id).where(SetRow.run_id == run.id))
    frame = RecordSet(project, set_id).to_frame().sort_values("item_id")
    return [(int(i), d) for i, d in zip(frame["item_id"], frame["data"], strict=True)]


def attempts(project: Project, run_ref: str, index: int) -> list[int]:
    folder = project.root / project.get_run(run_ref).folder / "extra" / "attempts"
    return sorted(int(p.name.split("-")[1]) for p in folder.glob(f"{index:03d}-*"))


def steps_done(project: Project, run_ref: str) -> dict[str, str]:
    run = project.get_run(run_ref)
    with project.reader() as s:
        return dict(s.execute(select(StepRow.key, StepRow.status).where(
            StepRow.run_id == run.id)).all())


def test_reconstruction_across_workers_matches_a_local_run(tmp_path, dask_cluster):
    dask_cluster.start_scheduler()
    dask_cluster.start_worker("w1")
    dask_cluster.start_worker("w2")
    dask_cluster.wait_for_workers(2)
    folder = project_with_queue(tmp_path / "p", dask_cluster.address)
    project, simulated = run_protocol(folder, registry().get("SimulateParticles"), {
        "phantom": True, "n_particles": 40, "box_px": 24, "pixel_size_a": 3.0, "snr": 2.0,
        "seed": 3})
    assert simulated.status == "finished", simulated.error
    params = tmp_path / "reconstruct.json"
    params.write_text(json.dumps({"particles": {"run": simulated.run_id,
                                                "output": "particles"}}))
    for label, queue in (("local", "local"), ("cluster", "cluster")):
        done = cli("run-protocol", "ReconstructFourier", str(params), "--project", str(folder),
                   "--queue", queue, "--label", label, "--workers", "2", "--quiet",
                   xdg=tmp_path / "xdg")
        assert done.returncode == 0, done.stderr + dask_cluster.log_text()
    maps = []
    for label in ("local", "cluster"):
        run = project.get_run(label)
        assert run.queue == label
        with project.reader() as s:
            from cryoweave.store.schema import SetRow

            set_id = s.scalar(select(SetRow.id).where(SetRow.run_id == run.id,
                                                      SetRow.name == "volume"))
        maps.append(read_volume(VolumeSet(project, set_id).to_frame().iloc[0]["path"])[0])
    np.testing.assert_array_equal(maps[0], maps[1])
    # both workers computed (the steps really ran across the cluster)
    logs = dask_cluster.log_text()
    assert "Starting Worker" in logs


def test_worker_killed_mid_step_reruns_it_elsewhere_once(tmp_path, dask_cluster):
    dask_cluster.start_scheduler()
    dask_cluster.start_worker("w1")
    dask_cluster.start_worker("w2")
    pids = dask_cluster.wait_for_workers(2)
    folder = project_with_queue(tmp_path / "p", dask_cluster.address)
    gate = tmp_path / "gate"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_steps": 4, "gate": str(gate), "gate_step": 0}))
    runner = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyPlaced", str(params), "--project", str(folder),
                          "--queue", "cluster", "--label", "killed", "--quiet"),
        env=subprocess_env(XDG_CONFIG_HOME=str(tmp_path / "xdg")), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        attempts_dir = folder / "Runs" / "000001_ToyPlaced" / "extra" / "attempts"
        wait_until(lambda: any(attempts_dir.glob("000-*")), RUN_TIMEOUT_S, "step 0 to start")
        victim = attempts(Project.open(folder), "killed", 0)[0]
        assert victim in pids.values()
        os.kill(victim, signal.SIGKILL)  # the worker running step 0 dies mid-step
        gate.write_text("go")
        output, _ = runner.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        stop_process(runner)
    assert runner.returncode == 0, output + dask_cluster.log_text()
    project = Project.open(folder)
    survivor = next(pid for pid in pids.values() if pid != victim)
    assert attempts(project, "killed", 0) == sorted([victim, survivor])  # ran again elsewhere
    assert set(steps_done(project, "killed").values()) == {"done"}
    assert "4 steps run" in output  # recorded once each
    # the same outputs as an uninterrupted local run
    local = tmp_path / "local"
    run_protocol(local, registry().get("ToyPlaced"), {"n_steps": 4}, label="l")
    assert records_of(project, "killed") == records_of(Project.open(local), "l")


def test_scheduler_lost_fails_clearly_and_continue_finishes(tmp_path, dask_cluster):
    dask_cluster.start_scheduler()
    dask_cluster.start_worker("w1")
    dask_cluster.wait_for_workers(1)
    folder = project_with_queue(tmp_path / "p", dask_cluster.address)
    gate = tmp_path / "gate"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_steps": 4, "gate": str(gate), "gate_step": 2}))
    runner = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyPlaced", str(params), "--project", str(folder),
                          "--queue", "cluster", "--label", "lost", "--quiet"),
        env=subprocess_env(XDG_CONFIG_HOME=str(tmp_path / "xdg")), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
        attempts_dir = folder / "Runs" / "000001_ToyPlaced" / "extra" / "attempts"
        # one worker thread: steps run one after the other, so 0 and 1 are recorded when 2 starts
        wait_until(lambda: any(attempts_dir.glob("002-*")), RUN_TIMEOUT_S, "step 2 to start")
        stop_process(dask_cluster.scheduler, signal.SIGKILL)
        output, _ = runner.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        stop_process(runner)
    assert runner.returncode == 3, output
    assert "lost the connection to the Dask scheduler at " + dask_cluster.address in output
    assert "--continue" in output
    project = Project.open(folder)
    done = steps_done(project, "lost")
    assert done["placed/000"] == done["placed/001"] == "done"
    dask_cluster.stop(signal.SIGKILL)  # its worker is of no use without the scheduler
    gate.write_text("go")
    dask_cluster.start_scheduler()  # the same address again
    dask_cluster.start_worker("w2")
    dask_cluster.wait_for_workers(1)
    resumed = cli("run-protocol", "--continue", "lost", "--project", str(folder), "--quiet",
                  xdg=tmp_path / "xdg")
    assert resumed.returncode == 0, resumed.stderr + resumed.stdout
    assert "2 steps run, 2 skipped" in resumed.stdout
    assert [len(attempts(project, "lost", i)) for i in range(4)] == [1, 1, 2, 1]
    assert set(steps_done(project, "lost").values()) == {"done"}


def test_gpu_steps_only_on_gpu_workers_and_cpus_bound_threads(tmp_path, dask_cluster):
    dask_cluster.start_scheduler()
    dask_cluster.start_worker("cpu", "CPU=4,MEM=8")
    dask_cluster.start_worker("gpu", "CPU=4,MEM=8,GPU=1")
    pids = dask_cluster.wait_for_workers(2)
    folder = project_with_queue(tmp_path / "p", dask_cluster.address)
    project, gpu_run = run_protocol(folder, registry().get("ToyPlaced"),
                                    {"n_steps": 3, "gpu": True, "cpus": 3}, queue="cluster")
    assert gpu_run.status == "finished", gpu_run.error
    run_folder = project.root / project.get_run(gpu_run.run_id).folder / "extra"
    placed = [json.loads((run_folder / f"placed_{i:03d}.json").read_text()) for i in range(3)]
    assert {p["pid"] for p in placed} == {pids["gpu"]}
    assert {p["threads"] for p in placed} == {3}
    _, too_big = run_protocol(folder, registry().get("ToyPlaced"),
                              {"n_steps": 1, "mem_gb": 64}, queue="cluster")
    assert too_big.status == "failed"
    assert "no worker can run a step that needs CPU=1, MEM=64" in too_big.error


def test_worker_that_cannot_see_the_project_fails_the_run(tmp_path, dask_cluster):
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the project from a worker needs root and unshare")
    dask_cluster.start_scheduler()
    hidden = tmp_path / "shared"
    hidden.mkdir()
    # the worker gets its own mount namespace where the project's folder is an empty tmpfs
    dask_cluster.start_worker("blind", prefix=[
        "unshare", "--mount", "sh", "-c", f'mount -t tmpfs none "{hidden}" && exec "$@"', "-"])
    dask_cluster.wait_for_workers(1)
    folder = project_with_queue(hidden / "p", dask_cluster.address)
    _, summary = run_protocol(folder, registry().get("ToyPlaced"), {"n_steps": 1},
                              queue="cluster")
    assert summary.status == "failed"
    assert "cannot see the project folder" in summary.error
    assert "shared with the queue's workers" in summary.error


WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from cryoweave.formats import write_mrc
folder, n = Path(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    rng = np.random.default_rng(i)
    image = rng.normal(100.0, 5.0, (128, 160)).astype(np.float32)
    image[rng.integers(0, 128, 8), rng.integers(0, 160, 8)] = 5000.0  # hot pixels
    write_mrc(folder / f".tmp_{i}.mrc", image, 1.0)
    (folder / f".tmp_{i}.mrc").rename(folder / f"mic_{i:03d}.mrc")
    time.sleep(0.3)
"""

PREPROCESS = {"do_remove_bad_pixels": True, "bad_pixel_stddev": 5, "do_downsample": True,
              "downsample_factor": 2, "do_normalize": True, "batch_size": 2}


def test_streaming_preprocessing_on_the_cluster_matches_a_local_run(tmp_path, dask_cluster):
    from cryoweave.formats import read_image
    from cryoweave.store import MicrographSet

    dask_cluster.start_scheduler()
    dask_cluster.start_worker("w1")
    dask_cluster.start_worker("w2")
    dask_cluster.wait_for_workers(2)
    folder = project_with_queue(tmp_path / "p", dask_cluster.address)
    acquisition = tmp_path / "Micrographs"
    acquisition.mkdir()
    flow = tmp_path / "flow.yaml"
    flow.write_text(yaml.safe_dump({"protocols": [
        {"label": "import", "protocol": "ImportMicrographs",
         "params": {"pattern": str(acquisition / "*.mrc"), "streaming": True,
                    "pixel_size_a": 1.0, "timeout_s": 3.0, "file_settle_s": 0.2}},
        {"label": "preprocess", "protocol": "PreprocessMicrographs", "queue": "cluster",
         "params": {"micrographs": {"run": "import", "output": "micrographs"},
                    **PREPROCESS}}]}))
    n = 6
    writer = subprocess.Popen([__import__("sys").executable, "-c", WRITER, str(acquisition),
                               str(n)], env=subprocess_env())
    try:
        done = cli("workflow", "run", str(flow), "--project", str(folder),
                   xdg=tmp_path / "xdg")
    finally:
        stop_process(writer)
    assert done.returncode == 0, done.stderr + done.stdout + dask_cluster.log_text()
    project = Project.open(folder)
    assert project.get_run("preprocess").queue == "cluster"
    run = project.get_run("preprocess")
    with project.reader() as s:
        from cryoweave.store.schema import SetRow

        set_id = s.scalar(select(SetRow.id).where(SetRow.run_id == run.id))
    ours = MicrographSet(project, set_id).to_frame().sort_values("item_id")
    assert ours["item_id"].tolist() == list(range(1, n + 1))
    reference, imported = run_protocol(tmp_path / "ref", registry().get("ImportMicrographs"),
                                       {"pattern": str(acquisition / "*.mrc"),
                                        "pixel_size_a": 1.0})
    _, local = run_protocol(tmp_path / "ref", registry().get("PreprocessMicrographs"),
                            {**PREPROCESS, "micrographs": {"run": imported.run_id,
                                                           "output": "micrographs"}})
    theirs = MicrographSet(reference, local.outputs["micrographs"]).to_frame()
    for a, b in zip(ours["path"], theirs.sort_values("item_id")["path"], strict=True):
        np.testing.assert_array_equal(read_image(a)[0], read_image(b)[0])
