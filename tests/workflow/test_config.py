"""The site/project configuration, queues chosen per run, and local GPU placement."""

from __future__ import annotations

import itertools
import json
import sqlite3

import pytest
import yaml

from cryoweave.errors import ParamError
from cryoweave.plugin import registry
from cryoweave.store import Project
from cryoweave.workflow import (
    Runner,
    describe_config,
    load_config,
    post_script_allowed,
    run_protocol,
)


@pytest.fixture(autouse=True)
def isolated_config(tmp_path, monkeypatch):
    """No user, site or environment configuration leaks into these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("CRYOWEAVE_CONFIG", "CRYOWEAVE_DEVICE", "CRYOWEAVE_FFT_WORKERS",
                 "CRYOWEAVE_QUEUE", "CRYOWEAVE_DASK_SCHEDULER"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "xdg" / "cryoweave" / "config.yaml"


def write_yaml(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_files_are_layered_and_each_value_knows_its_source(tmp_path, isolated_config,
                                                           monkeypatch):
    write_yaml(isolated_config, {"device": "cpu", "engine_threads": 2,
                                 "queues": {"gpu": {"kind": "local", "devices": ["0"]}}})
    site = write_yaml(tmp_path / "site.yaml", {
        "engine_threads": 4, "default_queue": "hpc", "data_roots": ["/data"],
        "queues": {"hpc": {"kind": "slurm", "partition": "gpu", "gpus": 1, "cores": 8,
                           "memory": "32GB", "walltime": "02:00:00", "max_jobs": 4,
                           "prologue": ["module load cuda"]}}})
    monkeypatch.setenv("CRYOWEAVE_CONFIG", str(site))
    project = tmp_path / "project"
    write_yaml(project / "cryoweave.yaml", {"queues": {"gpu": {"kind": "local",
                                                               "devices": ["1", "2"]}}})
    loaded = load_config(project)
    config = loaded.config
    assert config.device == "cpu" and loaded.sources["device"] == str(isolated_config)
    assert config.engine_threads == 4 and loaded.sources["engine_threads"] == str(site)
    assert config.default_queue == "hpc" and config.queues["hpc"].memory_gb == 32
    assert config.queues["gpu"].devices == ["1", "2"]  # the project's queue replaces the user's
    assert loaded.sources["queues.gpu"] == str(project / "cryoweave.yaml")
    assert loaded.sources["queues.local"] == "default"
    monkeypatch.setenv("CRYOWEAVE_FFT_WORKERS", "3")  # environment variables still override
    monkeypatch.setenv("CRYOWEAVE_DASK_SCHEDULER", "tcp://127.0.0.1:9999")
    loaded = load_config(project)
    assert loaded.config.engine_threads == 3
    assert loaded.sources["engine_threads"] == "env CRYOWEAVE_FFT_WORKERS"
    assert loaded.config.queues["dask"].address == "tcp://127.0.0.1:9999"
    shown = describe_config(loaded)
    assert "engine_threads: 3  # from env CRYOWEAVE_FFT_WORKERS" in shown
    assert f"hpc:  # from {site}" in shown and "- module load cuda" in shown
    assert not post_script_allowed(project)
    write_yaml(project / "cryoweave.yaml", {"allow_post_script": True})
    assert post_script_allowed(project)


def test_bad_configuration_names_the_setting_and_the_file(tmp_path):
    project = tmp_path / "project"
    path = write_yaml(project / "cryoweave.yaml", {
        "default_queue": "nope", "colour": "red",
        "queues": {"d": {"kind": "dask"}}})
    with pytest.raises(ParamError) as info:
        load_config(project)
    assert "unknown setting(s) ['colour']" in str(info.value) and str(path) in str(info.value)
    write_yaml(path, {"queues": {"d": {"kind": "dask"}, "s": {"kind": "slurm",
                                                                "memory": "lots"}}})
    with pytest.raises(ParamError) as info:
        load_config(project)
    text = str(info.value)
    assert "queues.d" in text and "needs an 'address'" in text and str(path) in text
    assert "memory 'lots' is not a size" in text
    write_yaml(path, {"default_queue": "nope"})
    with pytest.raises(ParamError) as info:
        load_config(project)
    text = str(info.value)
    assert "default_queue 'nope' is not a configured queue; queues: local" in text


def test_config_show_and_check_queue_on_the_command_line(tmp_path, run_cli):
    project = tmp_path / "project"
    write_yaml(project / "cryoweave.yaml", {"device": "cpu"})
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    shown = run_cli("config", "show", "--project", str(project), **env)
    assert shown.returncode == 0, shown.stderr
    assert f"device: cpu  # from {project / 'cryoweave.yaml'}" in shown.stdout
    assert "default_queue: local  # from default" in shown.stdout
    checked = run_cli("config", "check-queue", "local", "--project", str(project), **env)
    assert checked.returncode == 0, checked.stderr
    assert "ok: ran on" in checked.stdout and "project folder visible: True" in checked.stdout
    missing = run_cli("config", "check-queue", "nope", "--project", str(project), **env)
    assert missing.returncode == 2 and "no queue 'nope'" in missing.stderr


def test_queue_is_checked_first_recorded_and_reused_on_continue(tmp_path, run_cli):
    project_dir = tmp_path / "project"
    write_yaml(project_dir / "cryoweave.yaml", {"queues": {
        "fast": {"kind": "local"}, "other": {"kind": "local"}}})
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_steps": 2}))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    bad = run_cli("run-protocol", "ToyPlaced", str(params), "--project", str(project_dir),
                  "--queue", "nope", **env)
    assert bad.returncode == 2 and "no queue 'nope'; configured queues: fast, local, other" \
        in bad.stderr
    assert not (project_dir / "project.sqlite").exists()  # nothing was created
    first = run_cli("run-protocol", "ToyPlaced", str(params), "--project", str(project_dir),
                    "--queue", "fast", "--label", "a", **env)
    assert first.returncode == 0, first.stderr
    with Project.open(project_dir) as project:
        assert project.get_run("a").queue == "fast"
    again = run_cli("run-protocol", "--continue", "a", "--project", str(project_dir), **env)
    assert again.returncode == 0, again.stderr
    with Project.open(project_dir) as project:
        assert project.get_run("a").queue == "fast"  # reused
    moved = run_cli("run-protocol", "--continue", "a", "--project", str(project_dir),
                    "--queue", "other", **env)
    assert moved.returncode == 0, moved.stderr
    with Project.open(project_dir) as project:
        assert project.get_run("a").queue == "other"  # overridden


def test_projects_made_before_the_queue_column_still_open(tmp_path):
    project, summary = run_protocol(tmp_path / "p", registry().get("ToyPlaced"),
                                    {"n_steps": 1})
    project.close()
    with sqlite3.connect(tmp_path / "p" / "project.sqlite") as conn:
        # as an older cryoweave wrote it: no queue column, and no migrations table either (the
        # summary column, newer, stays: revision 0002 adds it only when absent)
        conn.execute("ALTER TABLE runs DROP COLUMN queue")
        conn.execute("DROP TABLE alembic_version")
    with Project.open(tmp_path / "p") as reopened:
        run = reopened.get_run(summary.run_id)
        assert run.status == "finished" and run.queue is None
        again = Runner(reopened, run.id).execute(resume=True)
        assert again.status == "finished" and reopened.get_run(run.id).queue == "local"


def test_local_gpus_are_shared_out_one_per_concurrent_step(tmp_path):
    project_dir = tmp_path / "project"
    write_yaml(project_dir / "cryoweave.yaml", {"queues": {
        "gpus": {"kind": "local", "devices": ["7", "9"]}}})
    project, summary = run_protocol(project_dir, registry().get("ToyPlaced"),
                                    {"n_steps": 6, "gpu": True, "hold_s": 0.2},
                                    workers=3, queue="gpus")
    assert summary.status == "finished", summary.error
    folder = project.root / project.get_run(summary.run_id).folder / "extra"
    records = [json.loads((folder / f"placed_{i:03d}.json").read_text()) for i in range(6)]
    # three workers but two GPUs: the first two steps get the devices in order, the third
    # waits; no device is ever held by two steps at the same time
    assert [r["gpu_id"] for r in records[:2]] == ["7", "9"]
    assert {r["gpu_id"] for r in records} == {"7", "9"}
    for device in ("7", "9"):
        spans = sorted((r["start"], r["end"]) for r in records if r["gpu_id"] == device)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
    cpu_project, cpu_summary = run_protocol(tmp_path / "cpu", registry().get("ToyPlaced"),
                                            {"n_steps": 2, "gpu": False}, workers=2,
                                            queue="local")
    cpu_folder = cpu_project.root / cpu_project.get_run(cpu_summary.run_id).folder / "extra"
    assert json.loads((cpu_folder / "placed_000.json").read_text())["gpu_id"] is None


def test_workflow_entries_choose_their_queue(tmp_path):
    from cryoweave.workflow import load_workflow, prepare_workflow

    project_dir = tmp_path / "project"
    write_yaml(project_dir / "cryoweave.yaml", {"queues": {"gpus": {"kind": "local",
                                                                    "devices": ["0"]}}})
    flow = write_yaml(tmp_path / "flow.yaml", {"protocols": [
        {"label": "a", "protocol": "ToyPlaced", "params": {"n_steps": 1}, "queue": "gpus"},
        {"label": "b", "protocol": "ToyPlaced", "params": {"n_steps": 1}}]})
    project, run_ids = prepare_workflow(project_dir, load_workflow(flow))
    assert [project.get_run(r).queue for r in run_ids] == ["gpus", None]
    wrong = write_yaml(tmp_path / "wrong.yaml", {"protocols": [
        {"label": "c", "protocol": "ToyPlaced", "params": {"n_steps": 1}, "queue": "nope"}]})
    with pytest.raises(ParamError, match="c: no queue 'nope'"):
        prepare_workflow(project_dir, load_workflow(wrong))


def test_a_missing_service_skips_locally_and_fails_when_required(monkeypatch):
    from conftest import missing_service

    monkeypatch.delenv("CRYOWEAVE_REQUIRE_SERVICES", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no slurm here"):
        missing_service("no slurm here")
    monkeypatch.setenv("CRYOWEAVE_REQUIRE_SERVICES", "1")
    with pytest.raises(pytest.fail.Exception, match=r"no slurm here .*required services"):
        missing_service("no slurm here")


def test_the_configured_device_is_the_default_of_run_protocol(tmp_path, run_cli):
    from cryoweave.engine import cupy_available

    if cupy_available():
        pytest.skip("needs a machine without a GPU (asks for one and expects the refusal)")
    project_dir = tmp_path / "project"
    write_yaml(project_dir / "cryoweave.yaml", {"device": "GPU"})
    params = tmp_path / "params.json"
    params.write_text(json.dumps({"n_steps": 1}))
    env = {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    refused = run_cli("run-protocol", "ToyPlaced", str(params), "--project", str(project_dir),
                      **env)
    assert refused.returncode == 2 and "device='gpu' was requested" in refused.stderr
    assert not (project_dir / "project.sqlite").exists()
    chosen = run_cli("run-protocol", "ToyPlaced", str(params), "--project", str(project_dir),
                     "--device", "cpu", **env)
    assert chosen.returncode == 0, chosen.stderr
