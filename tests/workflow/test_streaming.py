"""Streaming: a producer process publishes items over time while a consumer protocol runs
concurrently in another process (real subprocesses, one SQLite project)."""

from __future__ import annotations

import json
import subprocess
import time

from sqlalchemy import select

from conftest import cryoweave_command, subprocess_env
from cryoweave.workflow import Project, RecordSet
from cryoweave.workflow._schema import Run, StepRow


def wait_for_run(project_dir, label: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (project_dir / "project.sqlite").exists():
            with Project.open(project_dir) as project:
                if project.find_run(label) is not None:
                    return
        time.sleep(0.1)
    raise AssertionError(f"run {label!r} did not appear")


def test_consumer_processes_a_growing_set_concurrently(tmp_path):
    n_items = 200
    (tmp_path / "producer.json").write_text(json.dumps(
        {"n_items": n_items, "interval_s": 0.02, "batch_size": 5}))
    (tmp_path / "consumer.json").write_text(json.dumps(
        {"records": {"run": "producer", "output": "records"}, "batch_size": 7}))
    common = ("--project", "proj", "--quiet")
    producer = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyProducer", "producer.json", "--label", "producer",
                          *common), cwd=tmp_path, env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_run(tmp_path / "proj", "producer")
    consumer = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyConsumer", "consumer.json", "--workers", "2",
                          *common), cwd=tmp_path, env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _p_out, p_err = producer.communicate(timeout=120)
    _c_out, c_err = consumer.communicate(timeout=120)
    assert producer.returncode == 0, p_err
    assert consumer.returncode == 0, c_err

    with Project.open(tmp_path / "proj") as project, project.reader() as s:
        runs = {r.label or r.protocol: r for r in s.scalars(select(Run))}
        producer_run = runs["producer"]
        consumer_run = runs["toy:ToyConsumer"]
        first_consumed = min(r.finished_at for r in s.scalars(
            select(StepRow).where(StepRow.run_id == consumer_run.id)))
    assert first_consumed < producer_run.finished_at - 1.0, \
        "the consumer should have processed items well before the producer closed"
    with Project.open(tmp_path / "proj") as project:
        produced = RecordSet(project, 1)
        doubled = RecordSet(project, 2)
        assert produced.is_closed and doubled.is_closed
        frame = doubled.to_frame()
        assert len(frame) == n_items
        assert sorted(frame["item_id"]) == list(range(1, n_items + 1))
        source = produced.to_frame().set_index("item_id")["data"]
        for item_id, data in zip(frame["item_id"], frame["data"], strict=True):
            assert data["value"] == 2 * source[item_id]["value"]


def test_a_watcher_naming_a_unit_twice_gives_one_item(tmp_path):
    from cryoweave.plugin import registry
    from cryoweave.workflow._submit import run_protocol

    project, summary = run_protocol(tmp_path / "p", registry().get("ToyProducer"),
                                    {"n_items": 7, "interval_s": 0, "batch_size": 3,
                                     "repeat_units": True})
    assert summary.status == "finished", summary.error
    frame = RecordSet(project, summary.outputs["records"]).to_frame()
    assert sorted(frame["item_id"]) == list(range(1, 8))
    assert sorted(d["value"] for d in frame["data"]) == list(range(7))
