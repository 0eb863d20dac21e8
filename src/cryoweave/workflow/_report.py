"""Runs, sets and protocols as JSON objects: what ``--json`` prints and a web API serves.

One function per object, so every consumer uses the same keys. The keys are stable (new
keys may be added; none is renamed or removed without a note):

run (:func:`run_dict`)
    ``id``, ``label``, ``protocol`` (``plugin:ClassName``), ``protocol_name``, ``status``
    (saved/running/finished/failed/…), ``state`` (status, or "running (process gone…)"),
    ``error``, ``folder`` (absolute), ``created_at``/``started_at``/``finished_at`` (ISO 8601,
    UTC, or null), ``duration_s``, ``params``, ``inputs`` (name → ``{"run", "output", "set"}``
    reference), ``outputs`` (name → set), ``steps`` (status → count), ``failed_items``
    (items that failed in the run's steps), ``devices`` (cpu/gpu → keys of the steps that
    recorded it), ``summary``.
set (:func:`set_dict`)
    ``set`` (id), ``name``, ``kind``, ``state`` (open/closed), ``size`` (items), ``files``.
protocol (:func:`protocol_dict`)
    ``name``, ``identity``, ``plugin``, ``label``, ``inputs`` and ``outputs`` (name → set
    kind), ``help``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from cryoweave.store import Project, SetHandle, queries, set_handle
from cryoweave.store.queries import iso_time, run_state

if TYPE_CHECKING:
    from cryoweave.store.schema import Run

log = logging.getLogger(__name__)


def set_dict(handle: SetHandle, *, files: bool = True) -> dict[str, Any]:
    """An output set (keys: module docstring); ``files`` lists the files it refers to."""
    row = handle.row()
    report = {"set": handle.id, "name": row.name, "kind": row.kind, "state": row.state,
              "size": handle.count()}
    if files:
        report["files"] = queries.set_files(handle.project, handle.id)
    return report


def output_sets(project: Project, run_id: int) -> dict[str, SetHandle]:
    return {o["name"]: set_handle(project, o["set"], o["kind"])
            for o in queries.run_outputs(project, run_id)}


def outputs_dict(project: Project, run_id: int, *, files: bool = True) -> dict[str, Any]:
    """The run's outputs as :func:`set_dict` gives them, read in a few queries."""
    report = {}
    for output in queries.run_outputs(project, run_id, sizes=True):
        item = {key: output[key] for key in ("set", "name", "kind", "state", "size")}
        if files:
            item["files"] = queries.set_files(project, output["set"])
        report[output["name"]] = item
    return report


def run_summary(project: Project, run: Run) -> dict[str, Any]:
    """The protocol's :meth:`~cryoweave.plugin.Protocol.summary` of ``run``: the one stored
    when it finished (``runs.summary``), else computed now (:func:`compute_summary`)."""
    stored = getattr(run, "summary", None)
    if run.status == "finished" and isinstance(stored, dict):
        return dict(stored)
    return compute_summary(project, run)


def storable_summary(summary: dict[str, Any]) -> dict[str, Any] | None:
    """``summary`` as it can be stored in the database (JSON), or None when it cannot."""
    try:
        return json.loads(json.dumps(summary, allow_nan=False))
    except (TypeError, ValueError):
        return None


def compute_summary(project: Project, run: Run, *, strict: bool = False) -> dict[str, Any]:
    """The protocol's summary of ``run``, computed from its outputs and steps (``{}`` when
    the protocol is not installed or its summary fails: that is logged, not raised, unless
    ``strict``)."""
    from cryoweave.plugin import SummaryContext, registry

    try:
        protocol = registry().get(run.protocol)
        steps = queries.step_results(project, run.id)
        ctx = SummaryContext(run.id, dict(run.params or {}), output_sets(project, run.id),
                             steps)
        return dict(protocol().summary(ctx) or {})
    except Exception as exc:  # a summary must never break `show` or `runs`
        if strict:
            raise
        log.warning("summary of run %s failed: %s", run.id, exc)
        return {}


def run_dict(project: Project, run: Run, *, summary: bool = True,
             files: bool = True) -> dict[str, Any]:
    """Everything about a run a person or a program asks first (keys: module docstring)."""
    params = dict(run.params or {})
    duration = (run.finished_at - run.started_at) if run.started_at and run.finished_at \
        else None
    return {
        "id": run.id, "label": run.label, "protocol": run.protocol,
        "protocol_name": run.protocol.split(":")[-1], "status": run.status,
        "state": run_state(run), "error": run.error, "folder": str(project.root / run.folder),
        "created_at": iso_time(run.created_at), "started_at": iso_time(run.started_at),
        "finished_at": iso_time(run.finished_at),
        "duration_s": round(duration, 3) if duration is not None else None,
        "params": params,
        "inputs": {name: value for name, value in params.items()
                   if isinstance(value, dict) and "set" in value},
        "outputs": outputs_dict(project, run.id, files=files),
        "steps": queries.step_counts(project, run.id),
        "failed_items": queries.failed_items(project, run.id)[0],
        "devices": queries.step_devices(project, run.id),
        "summary": run_summary(project, run) if summary else {},
    }


def protocol_dict(cls: Any) -> dict[str, Any]:
    """A protocol declaration: names, inputs and outputs (keys: module docstring)."""
    return {"name": cls.__name__, "identity": cls.identity(), "plugin": cls.plugin,
            "label": cls.label,
            "inputs": {n: s.kind for n, s in cls.inputs().items()},
            "outputs": {n: t.kind for n, t in cls.outputs().items()},
            "help": cls.help()}


def format_summary(summary: dict[str, Any]) -> str:
    """``key value, …`` for a terminal line (floats with 4 significant digits)."""
    parts = []
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)
