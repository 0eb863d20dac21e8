"""Runs on a real local Slurm cluster (Debian's slurmctld, slurmd and munge).

The fixture configures the cluster in a temporary folder, starts the daemons on 127.0.0.1
and stops them by PID. Without the packages (or as non-root) the tests skip, unless
CRYOWEAVE_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from conftest import TESTS_DIR, cryoweave_command, missing_service, subprocess_env
from cryoweave.plugin import registry
from cryoweave.store import Project, RecordSet
from cryoweave.store.schema import SetRow, StepRow
from cryoweave.workflow import run_protocol
from services import SLURM_BINARIES, SlurmCluster, stop_process, wait_until

RUN_TIMEOUT_S = 180  # only bounds a failing test


@pytest.fixture
def slurm_cluster():
    missing = [b for b in SLURM_BINARIES if shutil.which(b) is None]
    if missing:
        missing_service(f"Slurm/munge not installed (missing {', '.join(missing)}); "
                        "`make test` installs them when run as root")
    if os.geteuid() != 0:
        missing_service("a local Slurm cluster needs root (SlurmUser=root)")
    # a short path: the munge socket path must fit in a Unix socket address
    folder = Path(tempfile.mkdtemp(prefix="cw-slurm-"))
    cluster = SlurmCluster(folder)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def write_project_config(folder: Path, cluster: SlurmCluster) -> None:
    src = Path(__import__("cryoweave").__file__).resolve().parents[1]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cryoweave.yaml").write_text(yaml.safe_dump({"queues": {"gpu": {
        "kind": "slurm", "partition": cluster.partition, "cores": 1, "memory": "600MB",
        "gpus": 1, "walltime": "00:10:00", "max_jobs": 1, "scheduler_host": "127.0.0.1",
        "python": sys.executable,
        "prologue": [f"export PYTHONPATH={TESTS_DIR}:{src}",
                     "export CRYOWEAVE_PLUGINS=toy_protocols:PLUGIN"],
        "directives": ["--nodes=1"]}}}))


def test_protocol_runs_on_a_slurm_queue_with_gpu_workers(tmp_path, slurm_cluster):
    folder = tmp_path / "p"
    write_project_config(folder, slurm_cluster)
    env = subprocess_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), **slurm_cluster.env)
    checked = subprocess.run(cryoweave_command("config", "check-queue", "gpu", "--gpu",
                                               "--project", str(folder), "--timeout", "120"),
                             env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert checked.returncode == 0, checked.stdout + checked.stderr + slurm_cluster.log_text()
    # the worker job got the node's GPU (Slurm sets CUDA_VISIBLE_DEVICES for --gres=gpu:1)
    assert "CUDA_VISIBLE_DEVICES=0" in checked.stdout
    assert "project folder visible: True" in checked.stdout
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_steps": 3, "gpu": True, "hold_s": 0.5}))
    runner = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyPlaced", str(params), "--project", str(folder),
                          "--queue", "gpu", "--label", "onslurm", "--quiet"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: list[str] = []
    try:
        def job_listed() -> bool:
            seen.extend(line for line in slurm_cluster.squeue() if line and line not in seen)
            return any("cryoweave-slurm" in line for line in seen) or runner.poll() is not None

        wait_until(job_listed, RUN_TIMEOUT_S, "the worker job in squeue")
        output, _ = runner.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        stop_process(runner)
    assert runner.returncode == 0, output + slurm_cluster.log_text()
    jobs = [line for line in seen if "cryoweave-slurm" in line]
    assert jobs, f"no worker job seen in squeue: {seen}"
    job_id = jobs[0].split()[0]
    assert "gpu:1" in jobs[0]  # the job asked Slurm for one GPU (gres)
    deadline = time.monotonic() + 60  # the job ends when the runner closes its cluster
    while f"JobId={job_id} " not in (slurm_cluster.jobcomp.read_text()
                                     if slurm_cluster.jobcomp.exists() else ""):
        assert time.monotonic() < deadline, "the worker job never ended"
        time.sleep(0.2)
    project = Project.open(folder)
    run = project.get_run("onslurm")
    assert run.status == "finished" and run.queue == "gpu"
    with project.reader() as s:
        statuses = list(s.scalars(select(StepRow.status).where(StepRow.run_id == run.id)))
        set_id = s.scalar(select(SetRow.id).where(SetRow.run_id == run.id))
    assert statuses == ["done"] * 3
    placed = [json.loads((project.root / run.folder / "extra" / f"placed_{i:03d}.json")
                         .read_text()) for i in range(3)]
    assert runner.pid not in {p["pid"] for p in placed}  # computed by the Slurm job's worker
    local_project, local = run_protocol(tmp_path / "local", registry().get("ToyPlaced"),
                                        {"n_steps": 3})
    ours = RecordSet(project, set_id).to_frame().sort_values("item_id")
    theirs = RecordSet(local_project, local.outputs["records"]).to_frame()
    assert list(ours["data"]) == list(theirs.sort_values("item_id")["data"])


def test_worker_job_ended_by_slurm_mid_step_is_a_killed_worker(tmp_path, slurm_cluster):
    """What a walltime does to a job (Slurm ends it), done at once with scancel."""
    folder = tmp_path / "p"
    write_project_config(folder, slurm_cluster)
    config = yaml.safe_load((folder / "cryoweave.yaml").read_text())
    config["queues"]["cpu"] = {**config["queues"]["gpu"], "gpus": 0}
    (folder / "cryoweave.yaml").write_text(yaml.safe_dump(config))
    env = subprocess_env(XDG_CONFIG_HOME=str(tmp_path / "xdg"), **slurm_cluster.env)
    gate = tmp_path / "gate"
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_steps": 3, "gate": str(gate), "gate_step": 1}))
    runner = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyPlaced", str(params), "--project", str(folder),
                          "--queue", "cpu", "--label", "ended", "--quiet"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    attempts = folder / "Runs" / "000001_ToyPlaced" / "extra" / "attempts"
    try:
        wait_until(lambda: any(attempts.glob("001-*")) or runner.poll() is not None,
                   RUN_TIMEOUT_S, "step 1 to start")
        first = next(attempts.glob("001-*"))
        job_id = first.read_text().split()[1]
        subprocess.run(["scancel", job_id], env=env, check=True, timeout=30)
        wait_until(lambda: f"JobId={job_id} " in (slurm_cluster.jobcomp.read_text()
                                                  if slurm_cluster.jobcomp.exists() else ""),
                   RUN_TIMEOUT_S, "the cancelled job to end")
        gate.write_text("go")
        output, _ = runner.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        stop_process(runner)
    assert runner.returncode == 0, output + slurm_cluster.log_text()
    runs = sorted(p.read_text().split()[1] for p in attempts.glob("001-*"))
    assert len(runs) == 2 and job_id in runs and len(set(runs)) == 2  # rerun in a new job
    assert "3 steps run" in output  # recorded once each
    assert f"JobId={job_id} " in slurm_cluster.jobcomp.read_text()
