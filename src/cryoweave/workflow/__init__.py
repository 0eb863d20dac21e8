"""The workflow runtime: runner, streams, executors, configuration, workflows and export.

The project database and its typed sets live in :mod:`cryoweave.store`. The names below are
the runtime's public surface; each is imported on first use, so that a light command (``form``,
``--help``) that touches one name does not import the runner, SQLAlchemy or pandas.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> (private module, name in that module)
_EXPORTS: dict[str, tuple[str, str]] = {
    "Runner": ("runner", "Runner"),
    "RunProgress": ("runner", "RunProgress"),
    "RunSummary": ("runner", "RunSummary"),
    "failed_items": ("runner", "failed_items"),
    "stop": ("runner", "request_stop"),
    "request_stop": ("runner", "request_stop"),
    "run_protocol": ("_submit", "run_protocol"),
    "prepare_run": ("_submit", "prepare_run"),
    "validate_run": ("_runs", "validate_run"),
    "create_run": ("_runs", "create_run"),
    "label_problem": ("_runs", "label_problem"),
    "load_run_protocol": ("_runs", "load_run_protocol"),
    "format_validation_error": ("_runs", "_format_pydantic"),
    "WorkflowEntry": ("_workflow", "WorkflowEntry"),
    "load_workflow": ("_workflow", "load_workflow"),
    "prepare_workflow": ("_workflow", "prepare_workflow"),
    "run_dict": ("_report", "run_dict"),
    "set_dict": ("_report", "set_dict"),
    "protocol_dict": ("_report", "protocol_dict"),
    "outputs_dict": ("_report", "outputs_dict"),
    "run_state": ("_report", "run_state"),
    "format_summary": ("_report", "format_summary"),
    "parse_json": ("_param_files", "parse_json"),
    "parse_yaml": ("_param_files", "parse_yaml"),
    "read_text_utf8": ("_param_files", "read_text_utf8"),
    "export_set": ("_export", "export_set"),
    "export_particles": ("_export", "export_particles"),
    "set_files": ("_export", "set_files"),
    "delete_run": ("_delete", "delete_run"),
    "check_queue": ("_executors", "check_queue"),
    "POST_SCRIPT_ENV": ("_config", "POST_SCRIPT_ENV"),
    "PROJECT_CONFIG": ("_config", "PROJECT_CONFIG"),
    "Config": ("_config", "Config"),
    "QueueConfig": ("_config", "QueueConfig"),
    "describe_config": ("_config", "describe_config"),
    "load_config": ("_config", "load_config"),
    "post_script_allowed": ("_config", "post_script_allowed"),
}

__all__ = [
    "POST_SCRIPT_ENV",
    "PROJECT_CONFIG",
    "Config",
    "QueueConfig",
    "RunProgress",
    "RunSummary",
    "Runner",
    "WorkflowEntry",
    "check_queue",
    "create_run",
    "delete_run",
    "describe_config",
    "export_particles",
    "export_set",
    "failed_items",
    "format_summary",
    "format_validation_error",
    "label_problem",
    "load_config",
    "load_run_protocol",
    "load_workflow",
    "outputs_dict",
    "parse_json",
    "parse_yaml",
    "post_script_allowed",
    "prepare_run",
    "prepare_workflow",
    "protocol_dict",
    "read_text_utf8",
    "request_stop",
    "run_dict",
    "run_protocol",
    "run_state",
    "set_dict",
    "set_files",
    "stop",
    "validate_run",
]


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # the same names, eagerly, for type checkers
    from cryoweave.workflow._config import (
        POST_SCRIPT_ENV,
        PROJECT_CONFIG,
        Config,
        QueueConfig,
        describe_config,
        load_config,
        post_script_allowed,
    )
    from cryoweave.workflow._delete import delete_run
    from cryoweave.workflow._executors import check_queue
    from cryoweave.workflow._export import export_particles, export_set, set_files
    from cryoweave.workflow._param_files import parse_json, parse_yaml, read_text_utf8
    from cryoweave.workflow._report import (
        format_summary,
        outputs_dict,
        protocol_dict,
        run_dict,
        run_state,
        set_dict,
    )
    from cryoweave.workflow._runs import _format_pydantic as format_validation_error
    from cryoweave.workflow._runs import create_run, label_problem, load_run_protocol, validate_run
    from cryoweave.workflow._submit import prepare_run, run_protocol
    from cryoweave.workflow._workflow import WorkflowEntry, load_workflow, prepare_workflow
    from cryoweave.workflow.runner import (
        Runner,
        RunProgress,
        RunSummary,
        failed_items,
        request_stop,
    )
    from cryoweave.workflow.runner import request_stop as stop
