"""Creating runs: validate params (every problem at once), resolve inputs, make folders/sets.

Nothing is written to the project until every check has passed.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from cryoweave.errors import ParamError, StorageError
from cryoweave.plugin._inputs import InputRef
from cryoweave.plugin._protocol import Protocol
from cryoweave.plugin._registry import registry
from cryoweave.workflow._project import Project, run_folder_name
from cryoweave.workflow._schema import Run, SetRow
from cryoweave.workflow._sets import SET_TYPES, SetHandle
from cryoweave.workflow._store import create_set

RUN_SUBFOLDERS = ("extra", "tmp", "logs")


@dataclass
class PendingImport:
    """A path given for an input: it becomes an import run created before the main run."""

    input_name: str
    set_kind: str
    path: str


@dataclass
class ValidatedRun:
    protocol: type[Protocol]
    params: Any  # the protocol's Params instance
    inputs: dict[str, int | None] = field(default_factory=dict)  # input -> set id
    imports: list[PendingImport] = field(default_factory=list)
    # input -> (label, output) of a run the caller creates first (workflows)
    deferred: dict[str, tuple[str, str]] = field(default_factory=dict)


# label -> {output name: set kind} of runs a workflow creates before the one validated
PlannedOutputs = dict[str, dict[str, str]]


def _format_pydantic(error: ValidationError, model: Any,
                     input_names: frozenset[str] = frozenset()) -> list[str]:
    known = ", ".join(model.model_fields)
    problems = []
    for item in error.errors():
        parts = [str(p) for p in item["loc"]]
        if parts and parts[0] in input_names:
            parts = parts[:1]  # an input reference: report the parameter, not its sub-fields
        loc = ".".join(parts)
        kind = item["type"]
        if kind == "extra_forbidden":
            problems.append(f"unknown parameter {loc!r}; known parameters: {known}")
        elif kind == "missing":
            info = model.model_fields.get(str(item["loc"][0]))
            what = f" ({info.description})" if info is not None and info.description else ""
            problems.append(f"missing required parameter {loc!r}{what}")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            shown = item.get("input")
            got = "" if isinstance(shown, dict) and not loc else f" (got {shown!r})"
            problems.append(f"parameter {loc!r}: {msg}{got}" if loc else f"{msg}")
    return problems


def _planned_ref(name: str, ref: InputRef, kind: str, outputs: dict[str, str]) -> str | None:
    """Problem (or None) with a reference to a run that a workflow will create."""
    if ref.output not in outputs:
        return (f"input {name!r}: run {ref.run!r} of this workflow has no output "
                f"{ref.output!r}; its outputs are: {', '.join(sorted(outputs)) or 'none'}")
    if outputs[ref.output] != kind:
        return (f"input {name!r} expects a {kind} set, but run {ref.run!r} output "
                f"{ref.output!r} is a {outputs[ref.output]} set")
    return None


def _resolve_ref(project: Project | None, name: str, ref: InputRef, kind: str
                 ) -> tuple[int | None, str | None]:
    """(set id, problem) for a run/output reference."""
    if project is None:
        return None, (f"input {name!r} refers to run {ref.run!r}, but the project does not "
                      "exist yet; create it and run the producing protocol first")
    run = project.find_run(ref.run)  # type: ignore[arg-type]
    if run is None:
        return None, (f"input {name!r}: there is no run {ref.run!r} in this project "
                      "(`cryoweave runs` lists runs by id and label)")
    with project.reader() as s:
        sets = {row.name: row for row in s.scalars(select(SetRow).where(SetRow.run_id == run.id))}
    row = sets.get(ref.output or "")
    if row is None:
        outs = ", ".join(sorted(sets)) or "none"
        return None, (f"input {name!r}: run {run.id} ({run.protocol}) has no output "
                      f"{ref.output!r}; its outputs are: {outs}")
    if row.kind != kind:
        return None, (f"input {name!r} expects a {kind} set, but run {run.id} output "
                      f"{ref.output!r} is a {row.kind} set")
    return row.id, None


def _unknown_label(project: Project | None, run: Any) -> bool:
    """A workflow reference by a label that names no run (of the workflow or the project)."""
    if not isinstance(run, str) or run.isdigit():
        return False
    return project is None or project.find_run(run) is None


def _unknown_label_problem(name: str, label: str, project: Project | None,
                           planned: PlannedOutputs) -> str:
    known = list(planned)
    if project is not None:
        known += [r.label for r in project.list_runs() if r.label and r.label not in known]
    return (f"input {name!r} refers to the unknown label {label!r}; known labels (entries "
            f"above this one, runs of the project): {', '.join(known) or 'none'}")


def _check_path(name: str, path: str) -> str | None:
    if any(ch in path for ch in "*?["):
        if not glob.glob(path):
            return f"input {name!r}: no file matches the pattern {path!r}"
    elif not os.path.exists(path):
        return f"input {name!r}: file {path!r} not found"
    return None


def path_params(model: Any) -> list[str]:
    """Params declared with ``param(path=True)`` (files, folders, glob patterns)."""
    from cryoweave.plugin._params import field_meta

    return [name for name in model.model_fields
            if field_meta(model, name).get("format") == "path"]


def validate_run(project: Project | None, protocol: type[Protocol], raw: Any, *,
                 base_dir: Path | None = None,
                 planned: PlannedOutputs | None = None) -> ValidatedRun:
    """Validate raw params (a JSON object) for ``protocol``; raise ParamError listing all problems.

    Relative paths are taken from ``base_dir`` (default: the current folder) and stored
    absolute.
    """
    context = f"parameters of {protocol.__name__}"
    if not isinstance(raw, dict):
        raise ParamError(f"expected a JSON object of parameters, got {type(raw).__name__}",
                         context=context)
    base = Path(base_dir or Path.cwd())
    problems: list[str] = []
    specs = protocol.inputs()
    raw = dict(raw)
    for name in [*specs, *path_params(protocol.Params)]:
        value = raw.get(name)
        if isinstance(value, str) and value:
            raw[name] = str((base / value).resolve()) if not os.path.isabs(value) else value
    try:
        params = protocol.Params.model_validate(raw)
    except ValidationError as exc:
        params = None
        problems.extend(_format_pydantic(exc, protocol.Params, frozenset(specs)))

    validated = ValidatedRun(protocol, params)
    for name, spec in specs.items():
        value = getattr(params, name, None) if params is not None else None
        if value is None and params is None and name in raw:
            try:
                value = InputRef.model_validate({"path": raw[name]} if isinstance(raw[name], str)
                                                else raw[name])
            except ValidationError:
                value = None
        if value is None:
            validated.inputs[name] = None
            continue
        if value.is_path:
            problem = _check_path(name, value.path)
            if problem is None and spec.set_type.importer is None:
                problem = (f"input {name!r}: a {spec.kind} set cannot be imported from a file; "
                           "refer to a run output instead")
            if problem is None:
                validated.imports.append(PendingImport(name, spec.kind, value.path))
        elif planned and isinstance(value.run, str) and value.run in planned:
            problem = _planned_ref(name, value, spec.kind, planned[value.run])
            validated.inputs[name] = None
            validated.deferred[name] = (value.run, value.output or "")
        elif planned is not None and _unknown_label(project, value.run):
            problem = _unknown_label_problem(name, str(value.run), project, planned)
            validated.inputs[name] = None
        else:
            set_id, problem = _resolve_ref(project, name, value, spec.kind)
            validated.inputs[name] = set_id
        if problem:
            problems.append(problem)

    if not problems and params is not None:
        problems.extend(protocol().check_project(params, project))
    if not problems and params is not None and project is not None and not validated.deferred:
        handles = {n: SET_TYPES[specs[n].kind](project, sid)
                   for n, sid in validated.inputs.items() if sid is not None}
        problems.extend(protocol().check_inputs(params, handles))
    elif not problems and params is not None and not validated.deferred:
        problems.extend(protocol().check_inputs(params, {}))
    if problems:
        raise ParamError(problems, context=context)
    return validated


def stored_params(validated: ValidatedRun) -> dict[str, Any]:
    """The params as stored on the run: inputs as ``{"run", "output", "set"}`` references."""
    data = validated.params.model_dump(mode="json")
    for name, set_id in validated.inputs.items():
        if set_id is not None and isinstance(data.get(name), dict):
            data[name] = {**{k: v for k, v in data[name].items() if v is not None},
                          "set": set_id}
    return data


def create_run(project: Project, validated: ValidatedRun, *, label: str | None = None) -> int:
    """Insert the run, its output sets and its folder; returns the run id.

    Path inputs must have been imported first (their set ids filled into ``inputs``).
    """
    pending = [i.input_name for i in validated.imports if validated.inputs.get(i.input_name)
               is None] + [n for n in validated.deferred if validated.inputs.get(n) is None]
    if pending:
        raise StorageError(f"inputs {pending} were given as paths and are not imported yet")
    protocol = validated.protocol
    with project.transaction() as s:
        if label and s.scalar(select(Run.id).where(Run.label == label)) is not None:
            raise ParamError(f"run label {label!r} is already used in this project; "
                             "choose another label")
        run = Run(label=label or None, protocol=protocol.identity(),
                  schema_version=protocol.schema_version, params=stored_params(validated),
                  status="saved")
        s.add(run)
        s.flush()
        run.folder = run_folder_name(run.id, protocol.__name__)
        for name, set_type in protocol.outputs().items():
            create_set(s, run.id, name, set_type)
        run_id = run.id
        folder = project.root / run.folder
    for sub in RUN_SUBFOLDERS:
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return run_id


def import_params(kind: str, path: str) -> tuple[type[Protocol], dict[str, Any]]:
    """The importer protocol and params for a path given to an input of set kind ``kind``."""
    set_type: type[SetHandle] = SET_TYPES[kind]
    assert set_type.importer is not None
    protocol_name, param_name = set_type.importer
    return registry().get(protocol_name), {param_name: path}


def load_run_protocol(run: Run) -> tuple[type[Protocol], Any, dict[str, int | None]]:
    """The protocol class, its Params instance and input set ids of a stored run."""
    protocol = registry().get(run.protocol)
    data = dict(run.params or {})
    if run.schema_version < protocol.schema_version:
        data = protocol.migrate_params(run.schema_version, data)
    inputs: dict[str, int | None] = {}
    for name in protocol.inputs():
        ref = data.get(name)
        if isinstance(ref, dict):
            inputs[name] = ref.get("set")
            data[name] = {k: v for k, v in ref.items() if k in ("run", "output", "path")}
        else:
            inputs[name] = None
    try:
        params = protocol.Params.model_validate(data)
    except ValidationError as exc:
        raise ParamError(_format_pydantic(exc, protocol.Params, frozenset(protocol.inputs())),
                         context=f"stored parameters of run {run.id}") from exc
    return protocol, params, inputs
