"""Workflows: several protocols with references between them by run label, started together.

A workflow file (JSON or YAML)::

    {"protocols": [
      {"label": "import", "protocol": "ImportMicrographs", "params": {"pattern": "...", ...}},
      {"label": "preprocess", "protocol": "PreprocessMicrographs",
       "params": {"micrographs": {"run": "import", "output": "micrographs"}, ...}}]}

Every entry is validated before anything is created (a reference to an entry of the same
workflow is checked against that protocol's declared outputs); then the runs are created in
order and started at the same time, so streaming consumers run alongside their producers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cryoweave.errors import CryoweaveError, InputError, ParamError
from cryoweave.plugin import Protocol, registry
from cryoweave.store import Project, queries
from cryoweave.store.schema import Run
from cryoweave.workflow._config import load_config
from cryoweave.workflow._param_files import parse_json, parse_yaml, read_text_utf8
from cryoweave.workflow._runs import (
    PlannedOutputs,
    PlannedPreviews,
    ValidatedRun,
    create_run,
    label_problem,
    validate_run,
)
from cryoweave.workflow._submit import RunnerFactory, plan_imports, run_imports


@dataclass
class WorkflowEntry:
    label: str
    protocol: str
    params: dict[str, Any]
    queue: str | None = None  # a configured queue for this run's steps


def load_workflow(path: str | Path) -> list[WorkflowEntry]:
    """Entries of a workflow file, with a clear message for every structural problem."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path.resolve()}: workflow file not found")
    text = read_text_utf8(path, "workflow file")
    try:
        data = parse_yaml(path, text) if path.suffix in (".yaml", ".yml") \
            else parse_json(path, text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not valid {path.suffix.lstrip('.').upper()} ({exc})") from exc
    except RecursionError as exc:
        raise InputError(f"{path}: nested too deeply to be a workflow file; see "
                         "examples/ for the structure") from exc
    entries = data.get("protocols") if isinstance(data, dict) else None
    unknown_top = set(data) - {"protocols", "description", "name"} if isinstance(data, dict) \
        else set()
    if not isinstance(entries, list) or not entries:
        raise InputError(f'{path}: expected {{"protocols": [{{"label", "protocol", '
                         '"params"}, …]}')
    problems: list[str] = [f"unknown top-level key {k!r}" for k in sorted(unknown_top)]
    result = []
    for index, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str) or \
                not isinstance(entry.get("protocol"), str):
            problems.append(f"entry {index}: needs a string 'label' and 'protocol'")
            continue
        params = entry.get("params", {})
        if not isinstance(params, dict):
            problems.append(f"entry {index} ({entry['label']}): 'params' must be an object")
            continue
        label_issue = label_problem(entry["label"])
        if label_issue:
            problems.append(f"entry {index}: {label_issue}")
            continue
        unknown = set(entry) - {"label", "protocol", "params", "description", "queue"}
        if unknown:
            problems.append(f"entry {index} ({entry['label']}): unknown keys {sorted(unknown)}")
        queue = entry.get("queue")
        if queue is not None and not isinstance(queue, str):
            problems.append(f"entry {index} ({entry['label']}): 'queue' must be a queue name")
            queue = None
        result.append(WorkflowEntry(entry["label"], entry["protocol"], params, queue))
    labels = [e.label for e in result]
    problems += [f"label {lb!r} is used twice" for lb in sorted(set(labels))
                 if labels.count(lb) > 1]
    if problems:
        raise ParamError(problems, context=str(path))
    return result


@dataclass
class PlannedRun:
    entry: WorkflowEntry
    protocol: type[Protocol]
    validated: ValidatedRun
    imports: list[Any]
    existing: Run | None  # a run with this label already in the project (continued)


def prepare_workflow(project_dir: str | Path, entries: list[WorkflowEntry], *,
                     resume: bool = False, db_url: str | None = None,
                     base_dir: Path | None = None,
                     runner_factory: RunnerFactory | None = None) -> tuple[Project, list[int]]:
    """Validate every entry, then create the runs in order; returns their ids.

    With ``resume``, entries whose label already names a run in the project reuse that run
    (it is continued); otherwise a label already in use is an error.
    """
    project_dir = Path(project_dir)
    existing_project = Project.open(project_dir, db_url) if Project.exists(project_dir) \
        or db_url else None
    problems: list[str] = []
    planned_outputs: PlannedOutputs = {}
    planned_previews: PlannedPreviews = {}  # what entries importing files will produce
    plans: list[PlannedRun] = []
    config = load_config(project_dir).config
    for entry in entries:
        if entry.queue is not None and entry.queue not in config.queues:
            problems.append(f"{entry.label}: no queue {entry.queue!r}; configured queues: "
                            f"{', '.join(sorted(config.queues))}")
        try:
            protocol = registry().get(entry.protocol)
        except CryoweaveError as exc:
            problems.append(f"{entry.label}: {exc}")
            continue
        planned_outputs[entry.label] = {n: t.kind for n, t in protocol.outputs().items()}
        run = existing_project.find_run(entry.label) if existing_project else None
        if run is not None:
            if not resume:
                problems.append(f"{entry.label}: the label is already used by run {run.id}; "
                                "use --continue to resume the workflow, or other labels")
            elif run.protocol != protocol.identity():
                problems.append(f"{entry.label}: run {run.id} with this label is a "
                                f"{run.protocol} run, not {protocol.identity()}")
            plans.append(PlannedRun(entry, protocol, None, [], run))  # type: ignore[arg-type]
            continue
        try:
            validated = validate_run(existing_project, protocol, entry.params,
                                     base_dir=base_dir, planned=planned_outputs,
                                     planned_previews=planned_previews)
            imports = plan_imports(existing_project, protocol, validated, base_dir)
            planned_previews[entry.label] = validated.previews
        except ParamError as exc:
            problems.extend(f"{entry.label}: {p}" for p in exc.problems)
            continue
        plans.append(PlannedRun(entry, protocol, validated, imports, None))
    if problems:
        if existing_project is not None:
            existing_project.close()
        raise ParamError(problems, context="workflow")
    project = existing_project or Project.create(project_dir, db_url)
    run_ids: list[int] = []
    for plan in plans:
        if plan.existing is not None:
            run_ids.append(plan.existing.id)
            continue
        run_imports(project, plan.validated, plan.imports, plan.entry.label, runner_factory)
        for input_name, (label, output) in plan.validated.deferred.items():
            producer = project.get_run(label)
            plan.validated.inputs[input_name] = queries.output_set_id(project, producer.id,
                                                                      output)
        run_ids.append(create_run(project, plan.validated, label=plan.entry.label,
                                  queue=plan.entry.queue))
    return project, run_ids
