"""Checking a new-run request before anything is created: the protocol's validator, the
launch options (workers, executor, device, queue), the label, and file paths confined to the
allowed folders. Problems are ``{"field", "message"}`` objects, shown next to form fields."""

from __future__ import annotations

import re
from typing import Any

from cryoweave.errors import ParamError
from cryoweave.gui._files import FileBrowser, PathRefused
from cryoweave.gui._launch import DEVICES, EXECUTORS
from cryoweave.store import Project

FIELD_OF_PROBLEM = re.compile(r"(?:parameter|input) '([A-Za-z_]\w*)")


def problems_by_field(exc: ParamError) -> list[dict[str, Any]]:
    found = []
    for problem in exc.problems:
        match = FIELD_OF_PROBLEM.search(problem)
        found.append({"field": match.group(1) if match else None, "message": problem})
    return found


def launch_options(body: dict[str, Any], project: Project) -> tuple[dict[str, Any],
                                                                     list[dict[str, Any]]]:
    from cryoweave.workflow import load_config

    problems = []
    options: dict[str, Any] = {}
    try:
        workers = body.get("workers")
        if workers is not None and str(workers).strip() != "":  # empty: the protocol's choice
            workers = int(workers)
            if not 1 <= workers <= 256:
                raise ValueError
            options["workers"] = workers
    except (TypeError, ValueError):
        problems.append({"field": "_workers", "message":
                         f"workers must be an integer from 1 to 256, got {body.get('workers')!r}"})
    executor = body.get("executor") or "threads"
    if executor not in EXECUTORS:
        problems.append({"field": "_executor",
                         "message": f"executor must be one of {', '.join(EXECUTORS)}"})
    options["executor"] = executor
    device = body.get("device") or None
    if device is not None and device not in DEVICES:
        problems.append({"field": "_device",
                         "message": f"device must be one of {', '.join(DEVICES)}"})
    options["device"] = device
    queue = body.get("queue") or None
    if queue is not None:
        config = load_config(project.root).config
        if queue not in config.queues:
            problems.append({"field": "_queue", "message": f"no queue {queue!r}; configured "
                             f"queues: {', '.join(sorted(config.queues))}"})
    options["queue"] = queue
    return options, problems


def path_params(cls: Any) -> list[str]:
    """Parameters of ``cls`` that may hold file paths: its inputs, the parameters declared
    with ``path=True`` (schema ``"format": "path"``) and an importer's path parameter."""
    from cryoweave.store import SET_TYPES

    names = list(cls.inputs())
    for name, prop in cls.form_schema().get("properties", {}).items():
        formats = [prop.get("format")] + [p.get("format") for p in prop.get("anyOf", [])]
        if "path" in formats and name not in names:
            names.append(name)
    for set_type in SET_TYPES.values():
        if set_type.importer and set_type.importer[0] == cls.__name__ \
                and set_type.importer[1] not in names:
            names.append(set_type.importer[1])
    return names


def confined_paths(browser: FileBrowser, cls: Any, params: Any) -> list[dict[str, Any]]:
    """Problems with file paths in ``params`` that lead outside the allowed folders."""
    problems = []
    if not isinstance(params, dict):
        return problems
    for name in path_params(cls):
        value = params.get(name)
        if isinstance(value, str) and value:
            try:
                browser.check_param_path(value)
            except PathRefused as exc:
                problems.append({"field": name, "message": f"parameter {name!r}: {exc}"})
    return problems


NewRunCheck = tuple[Any, dict[str, Any], str | None, list[dict[str, Any]]]


def check_new_run(project: Project, body: Any, browser: FileBrowser) -> NewRunCheck:
    """(protocol class, launch options, label, problems) of a new-run request."""
    from cryoweave.plugin import registry
    from cryoweave.workflow import validate_run

    if not isinstance(body, dict) or not isinstance(body.get("protocol"), str):
        raise ParamError('expected {"protocol": NAME, "params": {...}}')
    cls = registry().get(body["protocol"])
    options, problems = launch_options(body, project)
    label = body.get("label") or None
    if label is not None:
        if not isinstance(label, str) or label.isdigit() or len(label) > 200:
            problems.append({"field": "_label", "message": "a label is text (not only digits, "
                             "at most 200 characters)"})
        elif project.find_run(label) is not None:
            problems.append({"field": "_label", "message": f"run label {label!r} is already "
                             "used in this project; choose another label"})
    refused = confined_paths(browser, cls, body.get("params"))
    if refused:  # not even inspected
        return cls, options, label, problems + refused
    try:
        validate_run(project, cls, body.get("params", {}), base_dir=project.root)
    except ParamError as exc:
        problems.extend(problems_by_field(exc))
    return cls, options, label, problems
