"""The runner: plans, results recorded atomically, resume by key + content hash, failures."""

from __future__ import annotations

import threading
import time

import pytest

from cryoweave.errors import ParamError, StorageError
from cryoweave.plugin import registry
from cryoweave.store import RecordSet
from cryoweave.store.schema import Event, Run, StepRow
from cryoweave.workflow import Runner, create_run, run_protocol, stop, validate_run


def executions(project, run_id: int) -> list[int]:
    log = project.root / project.get_run(run_id).folder / "extra" / "executions.log"
    return [int(x) for x in log.read_text().split()] if log.exists() else []


def execute_in_thread(project, run_id: int) -> tuple[threading.Thread, dict]:
    """Start ``Runner(project, run_id).execute()`` in a thread; its summary lands in the dict."""
    outcome: dict = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault("summary", Runner(project, run_id).execute()))
    thread.start()
    return thread, outcome


def records(project, run_id: int):
    return RecordSet(project, run_id).to_frame().sort_values("item_id")


@pytest.mark.parametrize("executor", ["threads", "processes"])
def test_static_plan_runs_and_publishes(tmp_path, executor):
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"),
                                    {"n_steps": 6, "items_per_step": 2}, workers=2,
                                    executor=executor)
    assert summary.status == "finished", summary.error
    out = RecordSet(project, summary.outputs["records"])
    assert out.is_closed and out.count() == 12
    assert sorted(executions(project, summary.run_id)) == list(range(6))
    assert (project.root / "Runs/000001_ToySteps/logs/run.log").read_text().count("done") >= 6


def test_continue_skips_finished_steps(tmp_path):
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"), {"n_steps": 4})
    before = records(project, summary.outputs["records"])
    again = Runner(project, summary.run_id).execute(resume=True)
    assert again.status == "finished"
    assert (again.steps_run, again.steps_skipped) == (0, 4)
    assert sorted(executions(project, summary.run_id)) == [0, 1, 2, 3]
    assert records(project, summary.outputs["records"]).equals(before)


def test_missing_output_file_reruns_step_and_replaces_its_items(tmp_path):
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"), {"n_steps": 3})
    (project.root / "Runs/000001_ToySteps/extra/out_001.txt").unlink()
    again = Runner(project, summary.run_id).execute(resume=True)
    assert (again.steps_run, again.steps_skipped) == (1, 2)
    assert sorted(executions(project, summary.run_id)) == [0, 1, 1, 2]
    out = records(project, summary.outputs["records"])
    assert out["item_id"].tolist() == list(range(1, 10))  # no duplicates, none lost


def test_failed_step_fails_run_with_message_and_continue_retries(tmp_path):
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"),
                                    {"n_steps": 3, "fail_step": 1, "chain": True})
    assert summary.status == "failed"
    assert "work/001" in summary.error and "told to fail" in summary.error
    with project.reader() as s:
        run = s.get(Run, summary.run_id)
        assert run.status == "failed" and "told to fail" in run.error
        statuses = {r.key: r.status for r in s.query(StepRow).filter_by(run_id=run.id)}
        assert statuses == {"work/000": "done", "work/001": "failed", "work/002": "pending"}
        assert s.query(Event).filter_by(run_id=run.id, kind="step_failed").count() == 1
    assert RecordSet(project, summary.outputs["records"]).state == "open"
    with pytest.raises(StorageError, match="--continue"):
        Runner(project, summary.run_id).execute()


def test_dependencies_run_in_order(tmp_path):
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"),
                                    {"n_steps": 5, "chain": True}, workers=3)
    assert executions(project, summary.run_id) == [0, 1, 2, 3, 4]


def test_stop_request_aborts_a_non_streaming_run(tmp_path):
    project, _summary = run_protocol(tmp_path, registry().get("ToySteps"), {"n_steps": 1})
    validated = validate_run(project, registry().get("ToySteps"),
                             {"n_steps": 50, "sleep_s": 0.05, "chain": True})
    run_id = create_run(project, validated)
    thread, outcome = execute_in_thread(project, run_id)
    time.sleep(0.5)
    stop(project, run_id)
    thread.join(timeout=30)
    assert outcome["summary"].status == "aborted"
    assert 0 < len(executions(project, run_id)) < 50
    with project.reader() as s:
        assert s.get(Run, run_id).status == "aborted"


def test_references_by_label_and_wrong_kind(tmp_path):
    project, _producer = run_protocol(tmp_path, registry().get("ToySteps"), {"n_steps": 2},
                                     label="steps")
    _, consumer = run_protocol(tmp_path, registry().get("ToyConsumer"),
                               {"records": {"run": "steps", "output": "records"}})
    assert consumer.status == "finished"
    assert RecordSet(project, consumer.outputs["doubled"]).count() == 6
    with pytest.raises(ParamError) as info:
        run_protocol(tmp_path, registry().get("ToyConsumer"),
                     {"records": {"run": "nope", "output": "records"}, "batch_size": 0,
                      "extra_key": 1})
    text = str(info.value)
    assert "3 problems" in text and "no run 'nope'" in text and "batch_size" in text
    assert "extra_key" in text


@pytest.mark.postgres
def test_runner_on_postgres(tmp_path, postgres_database):
    url = postgres_database
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"), {"n_steps": 3},
                                    db_url=url, workers=2)
    assert summary.status == "finished"
    assert RecordSet(project, summary.outputs["records"]).count() == 9
    again = Runner(project, summary.run_id).execute(resume=True)
    assert again.steps_skipped == 3


def test_dask_executor_runs_steps_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed")
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"),
                                    {"n_steps": 4, "items_per_step": 2}, workers=2,
                                    executor="dask")
    assert summary.status == "finished", summary.error
    assert RecordSet(project, summary.outputs["records"]).count() == 8
    assert sorted(executions(project, summary.run_id)) == [0, 1, 2, 3]


def test_a_local_dask_cluster_needs_no_fixed_port(tmp_path):
    """Two workflows on one machine: the second's scheduler must not fight over port 8787."""
    import contextlib
    import socket
    import warnings

    pytest.importorskip("distributed")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(OSError):  # already in use by something else: the same
            taken.bind(("", 8787))
        taken.listen()
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*already in use.*")
            _, summary = run_protocol(tmp_path, registry().get("ToySteps"),
                                      {"n_steps": 2, "items_per_step": 1}, workers=1,
                                      executor="dask")
    assert summary.status == "finished", summary.error


def test_plans_that_grow_iteration_by_iteration_and_resume(tmp_path):
    project, summary = run_protocol(tmp_path, registry().get("ToyIterations"), {"target": 20})
    assert summary.status == "finished", summary.error
    values = RecordSet(project, summary.outputs["records"]).to_frame()["data"]
    assert [v["value"] for v in values] == [2, 4, 8, 16, 32]
    again = Runner(project, summary.run_id).execute(resume=True)
    assert again.status == "finished" and again.steps_run == 0  # extend() sees all results
    assert executions(project, summary.run_id) == [1, 2, 3, 4, 5]
    (project.root / project.get_run(summary.run_id).folder / "extra/iter04.txt").unlink()
    (project.root / project.get_run(summary.run_id).folder / "extra/iter05.txt").unlink()
    third = Runner(project, summary.run_id).execute(resume=True)  # as if killed in iteration 4
    assert third.steps_run == 2
    assert executions(project, summary.run_id) == [1, 2, 3, 4, 5, 4, 5]


def _steps(project, run_id: int) -> list[str]:
    with project.reader() as s:
        return [row.key for row in s.query(StepRow).filter(StepRow.run_id == run_id)]


def _producer_and_sum(project_dir, n_items=30):
    """A ToyProducer run (created, not started: its output is open and empty) and a ToyRecordSum
    run on that output."""
    project, _ = run_protocol(project_dir, registry().get("ToySteps"), {"n_steps": 1})
    producer = create_run(project, validate_run(project, registry().get("ToyProducer"),
                                                {"n_items": n_items, "interval_s": 0.01}),
                          label="producer")
    consumer = create_run(project, validate_run(project, registry().get("ToyRecordSum"),
                                                {"records": {"run": "producer",
                                                             "output": "records"}}))
    return project, producer, consumer


def test_a_run_that_needs_its_whole_input_waits_until_it_is_closed(tmp_path):
    """Not a streaming consumer: it plans once its input is closed, from all of it (before,
    a workflow planned it from the part published so far)."""
    project, producer, consumer = _producer_and_sum(tmp_path)
    thread, outcome = execute_in_thread(project, consumer)
    time.sleep(0.6)
    assert thread.is_alive() and _steps(project, consumer) == []  # waiting, nothing planned
    assert Runner(project, producer).execute().status == "finished"
    thread.join(timeout=60)
    summary = outcome["summary"]
    assert summary.status == "finished", summary.error
    result = RecordSet(project, summary.outputs["total"]).to_frame()["data"].iloc[0]
    assert result == {"count": 30, "total": float(sum(range(30)))}
    log = (project.root / project.get_run(consumer).folder / "logs" / "run.log").read_text()
    assert "waiting for input 'records' (set" in log and "producer), saved) to close" in log


def test_an_input_its_failed_producer_left_open_fails_the_run_saying_so(tmp_path):
    project, producer, consumer = _producer_and_sum(tmp_path)
    with project.transaction() as s:
        s.get(Run, producer).status = "failed"
    summary = Runner(project, consumer).execute()
    assert summary.status == "failed"
    assert f"of run {producer} (producer), which is failed and left it open" in summary.error
    assert f"run-protocol --continue {producer}" in summary.error
    assert _steps(project, consumer) == []


def test_a_run_waiting_for_its_input_stops_on_request(tmp_path):
    project, _producer, consumer = _producer_and_sum(tmp_path)
    thread, outcome = execute_in_thread(project, consumer)
    time.sleep(0.4)
    stop(project, consumer)
    thread.join(timeout=30)
    assert outcome["summary"].status == "aborted"
    assert "while waiting for its inputs" in outcome["summary"].error


def test_steps_that_start_together_share_the_cores_and_a_step_alone_gets_them_all(tmp_path):
    """The engine's threads (`fft_workers()` inside a step) are the step's share of the cores:
    two steps side by side get cores // 2 each (they oversubscribed before: every step took
    all cores), the step that runs after them alone gets all cores; --threads fixes them."""
    import os

    from threadpoolctl import threadpool_info

    from cryoweave.store import queries

    cores = os.cpu_count() or 1
    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert blas, "NumPy's BLAS library is not visible to threadpoolctl"
    params = {"n_steps": 2, "sleep_s": 0.3, "concurrent": 2, "join": True}
    project, summary = run_protocol(tmp_path, registry().get("ToySteps"), params)
    assert summary.status == "finished", summary.error
    info = queries.step_results(project, summary.run_id)
    for key in ("work/000", "work/001"):
        assert info[key]["threads"] == info[key]["fft_workers"] == max(1, cores // 2), info
        # BLAS products in a step stay within its share too, whatever the library's own count
        assert max(info[key]["blas_threads"]) <= max(1, cores // 2), info
    assert info["join"]["threads"] == info["join"]["fft_workers"] == cores, info
    assert info["join"]["blas_threads"][:len(blas)] == [min(n, cores) for n in blas], info
    # and the libraries have their own counts back after the run
    after = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    assert after[:len(blas)] == blas
    _, fixed = run_protocol(tmp_path, registry().get("ToySteps"), params, threads=3)
    info = queries.step_results(project, fixed.run_id)
    assert {v["fft_workers"] for v in info.values()} == {3}, info


def test_thread_budget_is_per_thread_and_restored(monkeypatch):
    import threading

    from cryoweave.engine import fft_workers, thread_budget

    monkeypatch.setenv("CRYOWEAVE_FFT_WORKERS", "5")
    seen = {}
    with thread_budget(2):
        assert fft_workers() == 2
        other = threading.Thread(target=lambda: seen.setdefault("other", fft_workers()))
        other.start()
        other.join()
        with thread_budget(None):
            assert fft_workers() == 2
    assert seen["other"] == 5 and fft_workers() == 5
    with pytest.raises(ValueError, match="at least 1"), thread_budget(0):
        pass
