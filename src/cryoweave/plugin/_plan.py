"""Plans of keyed steps, and what a step function receives and returns.

A step is a stable key, an importable function, JSON-serialisable arguments, the files it
declares as outputs, its dependencies and resources. A step function never touches the project
database: it receives a :class:`StepContext` and returns a :class:`StepResult` that the runtime
records — together with the step's status — in one transaction.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas loads on use: `cryoweave form` imports the plugin API without it
    import pandas as pd

StepFunction = Callable[..., "StepResult | None"]


@dataclass(frozen=True)
class Resources:
    """What a step needs: CPU threads, a GPU, memory (GiB)."""

    cpus: int = 1
    gpu: bool = False
    mem_gb: float = 0.0


def function_path(func: StepFunction | str) -> str:
    """``module:qualname`` of a module-level function (the form persisted in the database)."""
    if isinstance(func, str):
        return func
    qualname = func.__qualname__
    if "<locals>" in qualname or "." in qualname:
        raise TypeError(f"step function {qualname} must be a module-level function")
    return f"{func.__module__}:{qualname}"


def resolve_function(path: str) -> StepFunction:
    """Import a step function from its ``module:qualname`` path."""
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


@dataclass(frozen=True)
class Step:
    """One unit of work with a stable key (``"import/mic-000123"``)."""

    key: str
    func: StepFunction | str
    args: Mapping[str, Any] = field(default_factory=dict)
    outputs: Sequence[str] = ()
    after: Sequence[str] = ()
    resources: Resources = Resources()
    label: str = ""

    @property
    def func_path(self) -> str:
        return function_path(self.func)

    def content_hash(self, salt: str = "") -> str:
        """Hash of the function, its arguments and ``salt`` (protocol version)."""
        payload = canonical_json({"func": self.func_path, "args": self.args, "salt": salt})
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ForEachBatch:
    """Stream over an input set: every new batch of items becomes one step.

    ``make_step(batch)`` runs in the runner with the new items as a DataFrame (columns of the
    set's item table, ``item_id`` first) and returns the step for them. Its key must be derived
    from the items (e.g. the first item id), so that it is stable across ``--continue``.
    """

    input: str
    make_step: Callable[[ItemBatch], Step]
    batch_size: int = 10


@dataclass(frozen=True)
class WorkUnit:
    """Something a watcher discovered (a settled file): a stable key and JSON data."""

    key: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Watch:
    """Stream from the outside world (a folder filling during acquisition).

    ``discover()`` returns every unit ready now (already seen ones included, the runner skips
    keys it knows, and keeps the first of units sharing a key); ``make_step(units,
    first_item_id)`` turns new units into one step. The watch ends ``timeout_s`` after the last
    new unit, or when the run is asked to stop; then ``remaining()``, if given, returns every
    unit there is by then, ready or not (known keys are skipped again), and the new ones become
    a last batch of steps (which records those it cannot use as failed items), so nothing
    found is dropped silently.
    """

    discover: Callable[[], list[WorkUnit]]
    make_step: Callable[[list[WorkUnit], int], Step]
    timeout_s: float = 60.0
    interval_s: float = 1.0
    batch_size: int = 10
    remaining: Callable[[], list[WorkUnit]] | None = None


@dataclass
class Plan:
    """What a run does: static steps, streams that produce steps, and later steps.

    ``extend()`` is called whenever every step so far is done and every stream has ended; it
    returns further steps (e.g. the next iteration, planned from the files the previous one
    wrote) or ``[]`` when the run is complete. It must be deterministic given those files, so
    that a continued run plans the same keys again (finished ones are then skipped).
    ``concurrent_steps`` is how many ready steps run at once unless the run is given its
    ``workers``.
    """

    steps: list[Step] = field(default_factory=list)
    streams: list[ForEachBatch | Watch] = field(default_factory=list)
    extend: Callable[[], list[Step]] | None = None
    # steps worth running at once when the user does not say (`run-protocol --workers`), e.g.
    # 2 for independent steps of one core each (the two half sets); at most the machine's cores
    concurrent_steps: int = 1


@dataclass
class ItemBatch:
    """New input items handed to :attr:`ForEachBatch.make_step`."""

    input: str
    items: pd.DataFrame
    set_properties: dict[str, Any]
    optics: pd.DataFrame | None = None

    @property
    def item_ids(self) -> list[int]:
        return [int(i) for i in self.items["item_id"]]


@dataclass
class Derived:
    """Output items that are input items with some typed columns changed (ids kept).

    ``updates`` has ``item_id`` and the typed columns to overwrite; only the listed items are
    published. The output set also receives the input set's properties and optics groups
    unless the step gives its own.
    """

    input: str
    updates: pd.DataFrame
    source_set_id: int | None = None  # a set other than an input (e.g. a previous run's)


@dataclass
class StepResult:
    """What a step returns; the runtime records it atomically with the step status.

    ``publish`` maps an output name to new items (a DataFrame with the item table's columns;
    unknown columns go to the item's pass-through metadata). ``optics`` gives optics groups of
    an output, ``properties`` updates set properties, ``info`` is a JSON summary kept on the step,
    and ``item_failures`` maps an input item id to an error message (the stream goes on).
    ``derive`` publishes input items with changed columns (see :class:`Derived`).
    ``excused_outputs`` are declared outputs not written because their item failed; they are
    not required (now or on resume).
    """

    publish: dict[str, pd.DataFrame] = field(default_factory=dict)
    derive: dict[str, Derived] = field(default_factory=dict)
    optics: dict[str, pd.DataFrame] = field(default_factory=dict)
    properties: dict[str, dict[str, Any]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    item_failures: dict[int, str] = field(default_factory=dict)
    excused_outputs: list[str] = field(default_factory=list)


ProgressCallback = Callable[[str, int, int | None], None]


@dataclass
class StepContext:
    """What a step function may use: its run folder, a logger, progress, engine settings."""

    run_id: int
    step_key: str
    run_dir: Path
    threads: int = 1
    device: str = "cpu"
    progress_callback: ProgressCallback | None = None
    gpu_id: str | None = None  # the GPU this step was given (CUDA_VISIBLE_DEVICES-style id)

    @property
    def extra_dir(self) -> Path:
        return self.run_dir / "extra"

    @property
    def tmp_dir(self) -> Path:
        """Scratch files of the run, removed when it finishes (keep step outputs in extra/)."""
        return self.run_dir / "tmp"

    @property
    def logger(self) -> logging.Logger:
        return logging.getLogger(f"cryoweave.run{self.run_id}")

    def progress(self, done: int, total: int | None = None) -> None:
        """Report progress of this step (``done`` of ``total`` units).

        A failing display never fails the step: the error is logged and reporting stops.
        """
        if self.progress_callback is None:
            return
        try:
            self.progress_callback(self.step_key, done, total)
        except Exception:
            self.logger.warning("progress display failed; no more progress for step %s",
                                self.step_key, exc_info=True)
            self.progress_callback = None
