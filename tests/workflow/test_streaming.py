"""Streaming: a producer process publishes items over time while a consumer protocol runs
concurrently in another process (real subprocesses, one SQLite project)."""

from __future__ import annotations

import json
import subprocess
import time

from sqlalchemy import select

from conftest import cryoweave_command, subprocess_env
from cryoweave.store import Project, RecordSet
from cryoweave.store.schema import Run, StepRow


def wait_for_run(project_dir, label: str, timeout_s: float = 60) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if (project_dir / "project.sqlite").exists():
            with Project.open(project_dir) as project:
                if project.find_run(label) is not None:
                    return
        time.sleep(0.1)
    raise AssertionError(f"run {label!r} did not appear")


def _consumer_steps_done(project_dir, consumer_label: str) -> int:
    with Project.open(project_dir) as project, project.reader() as s:
        run = s.scalar(select(Run).where(Run.label == consumer_label))
        if run is None:
            return 0
        return len(list(s.scalars(select(StepRow).where(
            StepRow.run_id == run.id, StepRow.status == "done"))))


def test_consumer_processes_a_growing_set_concurrently(tmp_path):
    """The consumer finishes steps while the producer's set is still open and growing.

    No timing margins: the producer publishes until it is stopped, and the test stops it only
    after it has seen the consumer's first finished step with the producer's set still open.
    """
    (tmp_path / "producer.json").write_text(json.dumps(
        {"n_items": 100_000, "interval_s": 0.02, "batch_size": 5}))
    (tmp_path / "consumer.json").write_text(json.dumps(
        {"records": {"run": "producer", "output": "records"}, "batch_size": 7}))
    common = ("--project", "proj", "--quiet")
    producer = subprocess.Popen(
        cryoweave_command("run-protocol", "ToyProducer", "producer.json", "--label", "producer",
                          *common), cwd=tmp_path, env=subprocess_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    consumer = None
    try:
        wait_for_run(tmp_path / "proj", "producer")
        consumer = subprocess.Popen(
            cryoweave_command("run-protocol", "ToyConsumer", "consumer.json", "--workers", "2",
                              "--label", "consumer", *common), cwd=tmp_path,
            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while _consumer_steps_done(tmp_path / "proj", "consumer") == 0:
            assert time.time() < deadline, "the consumer finished no step within 120 s"
            assert consumer.poll() is None, consumer.communicate()[1]
            time.sleep(0.1)
        with Project.open(tmp_path / "proj") as project:
            assert not RecordSet(project, 1).is_closed, \
                "the consumer should process items while the producer's set is still open"
        stopped = subprocess.run(cryoweave_command("stop", "producer", *common[:2]),
                                 cwd=tmp_path, env=subprocess_env(), capture_output=True,
                                 text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        _p_out, p_err = producer.communicate(timeout=120)
        _c_out, c_err = consumer.communicate(timeout=120)
    finally:
        for process in (producer, consumer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert producer.returncode == 0, p_err
    assert consumer.returncode == 0, c_err

    with Project.open(tmp_path / "proj") as project:
        produced = RecordSet(project, 1)
        doubled = RecordSet(project, 2)
        assert produced.is_closed and doubled.is_closed
        frame = doubled.to_frame()
        n_items = produced.count()
        assert n_items >= 7
        assert sorted(frame["item_id"]) == list(range(1, n_items + 1))
        source = produced.to_frame().set_index("item_id")["data"]
        for item_id, data in zip(frame["item_id"], frame["data"], strict=True):
            assert data["value"] == 2 * source[item_id]["value"]


def test_a_watcher_naming_a_unit_twice_gives_one_item(tmp_path):
    from cryoweave.plugin import registry
    from cryoweave.workflow import run_protocol

    project, summary = run_protocol(tmp_path / "p", registry().get("ToyProducer"),
                                    {"n_items": 7, "interval_s": 0, "batch_size": 3,
                                     "repeat_units": True})
    assert summary.status == "finished", summary.error
    frame = RecordSet(project, summary.outputs["records"]).to_frame()
    assert sorted(frame["item_id"]) == list(range(1, 8))
    assert sorted(d["value"] for d in frame["data"]) == list(range(7))
