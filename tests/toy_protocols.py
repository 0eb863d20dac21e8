"""Small protocols that exercise the runtime (static plans, streams, failures) in tests.

Subprocess tests make them discoverable with CRYOWEAVE_PLUGINS=toy_protocols:PLUGIN and this
folder on PYTHONPATH.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from cryoweave.formats import atomic_path
from cryoweave.plugin import (
    Input,
    ItemBatch,
    ParticleSet,
    Plan,
    PlanContext,
    Plugin,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    RecordSet,
    Resources,
    Step,
    StepContext,
    StepResult,
    Watch,
    WorkUnit,
    param,
)


class ToySteps(Protocol):
    """N steps that each write a file and publish ``items_per_step`` records."""

    label = "toy steps"

    class Params(ProtocolParams):
        n_steps: int = param(10, gt=0, description="steps")
        items_per_step: int = param(3, gt=0, description="records per step")
        sleep_s: float = param(0.0, ge=0, description="seconds each step sleeps")
        fail_step: int | None = param(None, description="index of a step that raises")
        chain: bool = param(False, description="each step depends on the previous one")
        concurrent: int = param(1, gt=0, description="the plan's concurrent_steps")
        join: bool = param(False, description="a last step after all the others")

    class Outputs(ProtocolOutputs):
        records: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        steps = []
        if params.join:
            steps.append(Step("join", toy_work, {"index": 1000, "items": 1,
                                                 "sleep_s": 0.0, "fail": False},
                              after=[f"work/{i:03d}" for i in range(params.n_steps)]))
        for i in range(params.n_steps):
            steps.append(Step(
                f"work/{i:03d}", toy_work,
                {"index": i, "items": params.items_per_step, "sleep_s": params.sleep_s,
                 "fail": params.fail_step == i},
                outputs=[f"extra/out_{i:03d}.txt"],
                after=[f"work/{i - 1:03d}"] if params.chain and i else []))
        return Plan(steps=steps, concurrent_steps=params.concurrent)


def toy_work(ctx: StepContext, index: int, items: int, sleep_s: float, fail: bool
             ) -> StepResult:
    time.sleep(sleep_s)
    if fail:
        raise ValueError(f"toy step {index} was told to fail")
    counter = ctx.extra_dir / "executions.log"
    with open(counter, "a") as handle:  # lets tests count how often each step really ran
        handle.write(f"{index}\n")
    with atomic_path(ctx.extra_dir / f"out_{index:03d}.txt") as tmp:
        tmp.write_text(f"step {index}\n")
    ctx.progress(1, 1)
    ids = [index * items + k + 1 for k in range(items)]
    frame = pd.DataFrame({"item_id": ids, "data": [{"step": index, "k": k, "value": i}
                                                   for k, i in enumerate(ids)]})
    from threadpoolctl import threadpool_info

    from cryoweave.engine import fft_workers

    blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
    return StepResult(publish={"records": frame},
                      info={"index": index, "threads": ctx.threads, "fft_workers": fft_workers(),
                            "blas_threads": blas})


class ToyProducer(Protocol):
    """Publish ``n_items`` records over time (one unit every ``interval_s``), then close."""

    label = "toy producer"

    class Params(ProtocolParams):
        n_items: int = param(200, gt=0, description="records to publish")
        interval_s: float = param(0.01, ge=0, description="seconds between records")
        batch_size: int = param(5, gt=0, description="records per step")
        repeat_units: bool = param(False, description="discover names every unit twice")

    class Outputs(ProtocolOutputs):
        records: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        clock_file = ctx.run_dir / "extra" / "start_time"
        if not clock_file.exists():
            clock_file.write_text(repr(time.time()))
        start = float(clock_file.read_text())

        def discover() -> list[WorkUnit]:
            elapsed = time.time() - start
            available = params.n_items if params.interval_s == 0 else min(
                params.n_items, int(elapsed / params.interval_s) + 1)
            units = [WorkUnit(f"{i:05d}", {"value": i}) for i in range(available)]
            return units + units if params.repeat_units else units

        def make_step(units: list[WorkUnit], first_item_id: int) -> Step:
            return Step(f"produce/{first_item_id:05d}", toy_produce,
                        {"values": [u.data["value"] for u in units],
                         "first_item_id": first_item_id})

        return Plan(streams=[Watch(discover, make_step, timeout_s=0.5, interval_s=0.02,
                                   batch_size=params.batch_size)])


def toy_produce(ctx: StepContext, values: list[int], first_item_id: int) -> StepResult:
    frame = pd.DataFrame({"item_id": [first_item_id + k for k in range(len(values))],
                          "data": [{"value": v, "time": time.time()} for v in values]})
    return StepResult(publish={"records": frame})


class ToyConsumer(Protocol):
    """Double every input record's value, batch by batch, as the input grows."""

    label = "toy consumer"
    streams_inputs = True

    class Params(ProtocolParams):
        records: Input[RecordSet] = param(description="input records")
        batch_size: int = param(7, gt=0, description="records per step")

    class Outputs(ProtocolOutputs):
        doubled: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        from cryoweave.plugin import ForEachBatch

        def make_step(batch: ItemBatch) -> Step:
            ids = batch.item_ids
            values = [d["value"] for d in batch.items["data"]]
            return Step(f"double/{ids[0]:05d}", toy_double, {"ids": ids, "values": values},
                        outputs=[f"extra/batch_{ids[0]:05d}.txt"])

        return Plan(streams=[ForEachBatch("records", make_step, params.batch_size)])


def toy_double(ctx: StepContext, ids: list[int], values: list[int]) -> StepResult:
    Path(ctx.extra_dir / f"batch_{ids[0]:05d}.txt").write_text(
        f"{os.getpid()} {time.time()!r}\n")
    frame = pd.DataFrame({"item_id": ids,
                          "data": [{"value": 2 * v, "time": time.time()} for v in values]})
    return StepResult(publish={"doubled": frame})


class ToyRecordSum(Protocol):
    """Count and sum the values of every input record, planned once (not a streaming
    consumer: it needs the whole input)."""

    label = "toy record sum"

    class Params(ProtocolParams):
        records: Input[RecordSet] = param(description="input records")

    class Outputs(ProtocolOutputs):
        total: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        values = [d["value"] for d in ctx.input("records").to_frame()["data"]]
        return Plan(steps=[Step("sum", toy_sum, {"count": len(values),
                                                 "total": float(sum(values))})])


def toy_sum(ctx: StepContext, count: int, total: float) -> StepResult:
    return StepResult(publish={"total": pd.DataFrame({"data": [{"count": count,
                                                                "total": total}]})})


class ToyCountParticles(Protocol):
    """Count the particles of each half (exercises implicit imports of path inputs)."""

    label = "toy count"

    class Params(ProtocolParams):
        particles: Input[ParticleSet] = param(description="particles")

    class Outputs(ProtocolOutputs):
        counts: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        frame = ctx.input("particles").to_frame(columns=["half"], with_extra=False)
        counts = frame["half"].value_counts().sort_index()
        return Plan(steps=[Step("count", toy_count, {"counts": {str(k): int(v)
                                                                for k, v in counts.items()}})])


def toy_count(ctx: StepContext, counts: dict[str, int]) -> StepResult:
    return StepResult(publish={"counts": pd.DataFrame({"data": [counts]})})




class ToyIterations(Protocol):
    """Iterations planned one at a time from the previous one's result file (Plan.extend)."""

    label = "toy iterations"

    class Params(ProtocolParams):
        target: int = param(20, gt=0, description="stop once the value reaches this")
        sleep_s: float = param(0.0, ge=0, description="seconds each iteration sleeps")

    class Outputs(ProtocolOutputs):
        records: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        state = ctx.run_dir / "extra"

        def step(i: int) -> Step:
            return Step(f"iter{i:02d}", toy_iterate,
                        {"index": i, "sleep_s": params.sleep_s},
                        outputs=[f"extra/iter{i:02d}.txt"],
                        after=[f"iter{i - 1:02d}"] if i > 1 else [])

        def extend() -> list[Step]:
            done = sorted(state.glob("iter*.txt"))
            value = int(done[-1].read_text()) if done else 0
            if value >= params.target:
                return []
            return [step(len(done) + 1)]

        return Plan(steps=[step(1)], extend=extend)


def toy_iterate(ctx: StepContext, index: int, sleep_s: float) -> StepResult:
    time.sleep(sleep_s)
    previous = ctx.extra_dir / f"iter{index - 1:02d}.txt"
    value = (int(previous.read_text()) if previous.exists() else 1) * 2
    with atomic_path(ctx.extra_dir / f"iter{index:02d}.txt") as tmp:
        tmp.write_text(str(value))
    with open(ctx.extra_dir / "executions.log", "a") as handle:
        handle.write(f"{index}\n")
    return StepResult(publish={"records": pd.DataFrame({"item_id": [index],
                                                        "data": [{"value": value}]})})


class ToyPlaced(Protocol):
    """Steps with declared resources that record where they ran (placement and fault tests).

    Each step writes ``extra/attempts/NNN-PID`` when it starts. With ``gate``, the first
    attempt of step ``gate_step`` waits until the file ``gate`` exists, so a test can kill its
    worker while the step is known to be running; later attempts do not wait.
    """

    label = "toy placed"

    class Params(ProtocolParams):
        n_steps: int = param(4, gt=0, description="steps")
        gpu: bool = param(False, description="the steps want a GPU")
        cpus: int = param(1, gt=0, description="cpus per step")
        mem_gb: float = param(0.0, ge=0, description="memory per step (GB)")
        hold_s: float = param(0.0, ge=0, description="seconds each step holds its device")
        gate: str | None = param(None, description="file the gated step waits for")
        gate_step: int = param(0, ge=0, description="index of the gated step")

    class Outputs(ProtocolOutputs):
        records: RecordSet

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        resources = Resources(cpus=params.cpus, gpu=params.gpu, mem_gb=params.mem_gb)
        return Plan(steps=[Step(
            f"placed/{i:03d}", toy_placed,
            {"index": i, "hold_s": params.hold_s,
             "gate": params.gate if i == params.gate_step else None},
            outputs=[f"extra/placed_{i:03d}.json"], resources=resources)
            for i in range(params.n_steps)])


def toy_placed(ctx: StepContext, index: int, hold_s: float, gate: str | None) -> StepResult:
    import json
    import socket

    attempts = ctx.extra_dir / "attempts"
    attempts.mkdir(exist_ok=True)
    first = not any(attempts.glob(f"{index:03d}-*"))
    (attempts / f"{index:03d}-{os.getpid()}").write_text(
        f"{socket.gethostname()} {os.environ.get('SLURM_JOB_ID', '')}")
    start = time.time()
    if gate and first:
        deadline = time.monotonic() + 120  # only bounds a failing test
        while not Path(gate).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    time.sleep(hold_s)
    record = {"index": index, "gpu_id": ctx.gpu_id, "threads": ctx.threads,
              "start": start, "end": time.time(), "pid": os.getpid()}
    with atomic_path(ctx.extra_dir / f"placed_{index:03d}.json") as tmp:
        tmp.write_text(json.dumps(record))
    frame = pd.DataFrame({"item_id": [index + 1], "data": [{"index": index,
                                                            "square": index * index}]})
    return StepResult(publish={"records": frame}, info={"pid": os.getpid()})


PLUGIN = Plugin("toy", "0.1", (ToySteps, ToyProducer, ToyConsumer, ToyRecordSum,
                                ToyCountParticles,
                                ToyIterations, ToyPlaced))
