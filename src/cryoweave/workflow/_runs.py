"""Creating runs: validate params (every problem at once), resolve inputs, make folders/sets.

Nothing is written to the project until every check has passed.

Just over 400 lines on purpose: validation and creation stay together so that rule is visible
in one module.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from cryoweave.errors import CryoweaveError, ParamError, StorageError
from cryoweave.plugin import InputRef, InputSpec, Protocol, SetPreview, registry
from cryoweave.store import SET_TYPES, Project, SetHandle, label_problem, queries, run_folder_name
from cryoweave.store.schema import Run
from cryoweave.store.writers import create_set

RUN_SUBFOLDERS = ("extra", "tmp", "logs")
def check_label(label: str | None, project: Project | None = None) -> None:
    """Raise ParamError when ``label`` cannot name a run (see label_problem) or, given the
    project, is already used there."""
    problem = label_problem(label)
    if problem is None and label and project is not None:
        used = queries.run_id_for_label(project, label)
        if used is not None:
            problem = (f"run label {label!r} is already used in this project (run {used}); "
                       "choose another label")
    if problem is not None:
        raise ParamError(problem)


@dataclass
class PendingImport:
    """A path given for an input: it becomes an import run created before the main run.

    ``importer`` and ``validated`` are the import run, validated with the main run (and its
    files inspected) before anything is created.
    """

    input_name: str
    set_kind: str
    path: str
    importer: type[Protocol] | None = None
    validated: ValidatedRun | None = None


@dataclass
class ValidatedRun:
    protocol: type[Protocol]
    params: Any  # the protocol's Params instance
    inputs: dict[str, int | None] = field(default_factory=dict)  # input -> set id
    imports: list[PendingImport] = field(default_factory=list)
    # input -> (label, output) of a run the caller creates first (workflows)
    deferred: dict[str, tuple[str, str]] = field(default_factory=dict)
    # output -> what the run will produce, read from its files (importers only)
    previews: dict[str, SetPreview] = field(default_factory=dict)


# label -> {output name: set kind} of runs a workflow creates before the one validated
PlannedOutputs = dict[str, dict[str, str]]
# label -> {output name: preview} of those runs that import files (see Protocol.preview)
PlannedPreviews = dict[str, dict[str, SetPreview]]


def _format_pydantic(error: ValidationError, model: Any,
                     input_names: frozenset[str] = frozenset()) -> list[str]:
    known = ", ".join(model.model_fields)
    problems = []
    for item in error.errors():
        parts = [str(p) for p in item["loc"]]
        kind = item["type"]
        if parts and parts[0] in input_names:
            if kind == "extra_forbidden" and len(parts) > 1:
                problems.append(f"input {parts[0]!r}: unknown key {parts[-1]!r}; "
                                f"{InputRef.EXPECTED}")
                continue
            parts = parts[:1]  # an input reference: report the parameter, not its sub-fields
        loc = ".".join(parts)
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
    sets = {o["name"]: o for o in queries.run_outputs(project, run.id)}
    output = sets.get(ref.output or "")
    if output is None:
        outs = ", ".join(sorted(sets)) or "none"
        return None, (f"input {name!r}: run {run.id} ({run.protocol}) has no output "
                      f"{ref.output!r}; its outputs are: {outs}")
    if output["kind"] != kind:
        return None, (f"input {name!r} expects a {kind} set, but run {run.id} output "
                      f"{ref.output!r} is a {output['kind']} set")
    return output["set"], None


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
    from cryoweave.plugin import field_meta

    return [name for name in model.model_fields
            if field_meta(model, name).get("format") == "path"]


def _importer_path_param(protocol: type[Protocol]) -> str | None:
    """The parameter holding the file(s) when ``protocol`` is the importer of a set type."""
    for set_type in SET_TYPES.values():
        if set_type.importer and set_type.importer[0] == protocol.__name__:
            return set_type.importer[1]
    return None


def _preview(protocol: type[Protocol], params: Any) -> tuple[dict[str, SetPreview], str | None]:
    """(previews, problem) of an importer's files: headers and metadata, no pixel data."""
    try:
        return protocol().preview(params), None
    except (CryoweaveError, OSError) as exc:
        problem = str(exc)
    except Exception as exc:  # a file the reader chokes on is the user's bad file, not a crash
        problem = f"cannot be read ({type(exc).__name__}: {exc})"
    path_param = _importer_path_param(protocol)
    if path_param and not problem.startswith(str(getattr(params, path_param, ""))):
        problem = f"{getattr(params, path_param)}: {problem}"
    return {}, f"parameter {path_param!r}: {problem}" if path_param else problem


def _as_input_problem(problem: str, name: str, importer: type[Protocol], path_param: str,
                      forwarded: set[str]) -> str:
    """An importer's problem, worded for the input ``name`` that was given a path."""
    own = f"parameter {path_param!r}"
    if problem.startswith(own):
        text = f"input {name!r}" + problem[len(own):]
    elif any(problem.startswith(f"parameter {option!r}") for option in forwarded):
        text = problem  # the user's own key, forwarded to the import
    else:
        text = f"input {name!r}: {problem}"
    hidden = [option for option in importer.Params.model_fields
              if option != path_param and option not in forwarded
              and re.search(rf"\b{option}\b", text)]
    if hidden:
        what = "a parameter" if len(hidden) == 1 else "parameters"
        text += (f" ({', '.join(hidden)}: {what} of {importer.__name__}; import the file "
                 f"with {importer.__name__} first and give that run's output as {name!r})")
    return text


def _forwarded(protocol: type[Protocol], name: str, params: Any, raw: dict[str, Any],
               invalid: set[str]) -> dict[str, Any]:
    """The params of ``protocol.import_options`` forwarded to the import of input ``name``."""
    values = {}
    for option in protocol.import_options.get(name, ()):
        if params is not None:
            value = getattr(params, option, None)
        else:
            value = raw.get(option) if option not in invalid else None
        if value is not None:
            values[option] = value
    return values


def _plan_import(project: Project | None, name: str, spec: InputSpec, path: str,
                 forwarded: dict[str, Any], base_dir: Path | None
                 ) -> tuple[PendingImport | None, SetPreview | None, list[str]]:
    """Validate the implicit import of ``path`` for input ``name`` and inspect its files."""
    importer, import_raw = import_params(spec.kind, path)
    path_param = next(iter(import_raw))
    options = {k: v for k, v in forwarded.items() if k in importer.Params.model_fields}
    try:
        validated = validate_run(project, importer, {**import_raw, **options},
                                 base_dir=base_dir)
    except ParamError as exc:
        return None, None, [_as_input_problem(p, name, importer, path_param, set(options))
                            for p in exc.problems]
    preview = validated.previews.get(next(iter(importer.outputs())))
    return PendingImport(name, spec.kind, path, importer, validated), preview, []


def _path_input(project: Project | None, name: str, spec: InputSpec, path: str,
                forwarded: dict[str, Any], base_dir: Path | None, validated: ValidatedRun
                ) -> tuple[SetPreview | None, list[str]]:
    """(preview, problems) of a path given for input ``name``; records its pending import."""
    problem = _check_path(name, path)
    if problem is None and spec.set_type.importer is None:
        problem = (f"input {name!r}: a {spec.kind} set cannot be imported from a file; "
                   "refer to a run output instead")
    if problem is not None:
        return None, [problem]
    pending, preview, problems = _plan_import(project, name, spec, path, forwarded, base_dir)
    if pending is not None:
        validated.imports.append(pending)
    return preview, problems


def _planned_input(name: str, spec: InputSpec, ref: InputRef, planned: PlannedOutputs,
                   planned_previews: PlannedPreviews | None, validated: ValidatedRun
                   ) -> tuple[SetPreview | None, list[str]]:
    """(preview, problems) of a reference to a run that the workflow creates first."""
    run = str(ref.run)
    problem = _planned_ref(name, ref, spec.kind, planned[run])
    validated.inputs[name] = None
    validated.deferred[name] = (run, ref.output or "")
    if problem is not None:
        return None, [problem]
    return (planned_previews or {}).get(run, {}).get(ref.output or ""), []


def _run_input(project: Project | None, name: str, spec: InputSpec, ref: InputRef,
               validated: ValidatedRun) -> tuple[Any, list[str]]:
    """(set handle, problems) of a reference to an existing run's output."""
    set_id, problem = _resolve_ref(project, name, ref, spec.kind)
    validated.inputs[name] = set_id
    if problem is not None or set_id is None or project is None:
        return None, [problem] if problem else []
    return SET_TYPES[spec.kind](project, set_id), []


def validate_run(project: Project | None, protocol: type[Protocol], raw: Any, *,
                 base_dir: Path | None = None,
                 planned: PlannedOutputs | None = None,
                 planned_previews: PlannedPreviews | None = None) -> ValidatedRun:
    """Validate raw params (a JSON object) for ``protocol``; raise ParamError listing all problems.

    Relative paths are taken from ``base_dir`` (default: the current folder) and stored
    absolute. An input given as a path is checked as its implicit import run will check it,
    and its files are inspected (headers and metadata) so that the protocol's
    ``check_inputs`` sees what it would see on an imported set: nothing is created first.
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
    invalid: set[str] = set()
    try:
        params = protocol.Params.model_validate(raw)
    except ValidationError as exc:
        params = None
        invalid = {str(item["loc"][0]) for item in exc.errors() if item["loc"]}
        problems.extend(_format_pydantic(exc, protocol.Params, frozenset(specs)))

    validated = ValidatedRun(protocol, params)
    handles: dict[str, Any] = {}
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
            handle, found = _path_input(project, name, spec, value.path,
                                        _forwarded(protocol, name, params, raw, invalid),
                                        base_dir, validated)
        elif planned and isinstance(value.run, str) and value.run in planned:
            handle, found = _planned_input(name, spec, value, planned, planned_previews,
                                           validated)
        elif planned is not None and _unknown_label(project, value.run):
            handle, found = None, [_unknown_label_problem(name, str(value.run), project,
                                                          planned)]
            validated.inputs[name] = None
        else:
            handle, found = _run_input(project, name, spec, value, validated)
        if handle is not None:
            handles[name] = handle
        problems.extend(found)

    if params is not None:
        # inputs that could not be resolved are left out: each check_inputs skips them
        problems.extend(protocol().check_project(params, project))
        problems.extend(protocol().check_inputs(params, handles))
    if not problems and params is not None:
        validated.previews, problem = _preview(protocol, params)
        if problem:
            problems.append(problem)
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


def create_run(project: Project, validated: ValidatedRun, *, label: str | None = None,
               queue: str | None = None) -> int:
    """Insert the run, its output sets and its folder; returns the run id.

    Path inputs must have been imported first (their set ids filled into ``inputs``).
    """
    pending = [i.input_name for i in validated.imports if validated.inputs.get(i.input_name)
               is None] + [n for n in validated.deferred if validated.inputs.get(n) is None]
    if pending:
        raise StorageError(f"inputs {pending} were given as paths and are not imported yet")
    check_label(label)
    protocol = validated.protocol
    with project.transaction() as s:
        if label and s.scalar(select(Run.id).where(Run.label == label)) is not None:
            raise ParamError(f"run label {label!r} is already used in this project; "
                             "choose another label")
        run = Run(label=label or None, protocol=protocol.identity(),
                  schema_version=protocol.schema_version, params=stored_params(validated),
                  status="saved", queue=queue)
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
