"""From raw params to a created run: validate first, then create the project, imports, run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryoweave.errors import CryoweaveError, ParamError, StorageError
from cryoweave.plugin import Protocol
from cryoweave.store import Project, queries
from cryoweave.workflow._runs import (
    PendingImport,
    ValidatedRun,
    check_label,
    create_run,
    validate_run,
)
from cryoweave.workflow.runner import Runner, RunSummary

RunnerFactory = Callable[[Project, int], Runner]


ImportPlan = tuple[PendingImport, type[Protocol], ValidatedRun]


def plan_imports(existing: Project | None, protocol: type[Protocol], validated: ValidatedRun,
                 base_dir: Path | None) -> list[ImportPlan]:
    """The implicit import runs of path inputs, validated (and their files inspected) by
    :func:`validate_run` before anything is created.

    Params named in ``protocol.import_options`` were forwarded to the importer.
    """
    plans = []
    for pending in validated.imports:
        if pending.importer is None or pending.validated is None:
            raise StorageError(f"input {pending.input_name!r}: its import was not validated")
        plans.append((pending, pending.importer, pending.validated))
    return plans


def run_imports(project: Project, validated: ValidatedRun, plans: list[ImportPlan],
                label: str | None, runner_factory: RunnerFactory | None) -> None:
    """Create and execute the import runs; fill the imported set ids into ``validated``."""
    make_runner = runner_factory or (lambda p, rid: Runner(p, rid))
    for pending, importer, import_validated in plans:
        import_id = create_run(project, import_validated,
                               label=f"{label}:{pending.input_name}" if label else None)
        summary = make_runner(project, import_id).execute()
        if summary.status != "finished":
            raise CryoweaveError(f"importing {pending.path} for input {pending.input_name!r} "
                                 f"failed (run {import_id}): {summary.error}")
        output_name = next(iter(importer.outputs()))
        validated.inputs[pending.input_name] = queries.output_set_id(project, import_id,
                                                                     output_name)


def prepare_run(project_dir: str | Path, protocol: type[Protocol], raw: Any, *,
                label: str | None = None, db_url: str | None = None,
                base_dir: Path | None = None, queue: str | None = None,
                runner_factory: RunnerFactory | None = None) -> tuple[Project, int]:
    """Validate ``raw`` for ``protocol``; create the project, import path inputs, create the run.

    Raises :class:`ParamError` listing every problem before anything is created.
    Path inputs are imported as runs of their set type's importer (executed here).
    """
    project_dir = Path(project_dir)
    existing = Project.open(project_dir, db_url) if Project.exists(project_dir) or db_url \
        else None
    try:
        check_label(label, existing)
        validated = validate_run(existing, protocol, raw, base_dir=base_dir)
        imports = plan_imports(existing, protocol, validated, base_dir)
    except ParamError:
        if existing is not None:
            existing.close()
        raise
    project = existing or Project.create(project_dir, db_url)
    run_imports(project, validated, imports, label, runner_factory)
    return project, create_run(project, validated, label=label, queue=queue)


def run_protocol(project_dir: str | Path, protocol: type[Protocol], raw: Any, *,
                 label: str | None = None, workers: int | None = None,
                 executor: str = "threads",
                 db_url: str | None = None, base_dir: Path | None = None,
                 **runner_options: Any) -> tuple[Project, RunSummary]:
    """Validate, create and execute a run in the foreground (the ``run-protocol`` command)."""

    def factory(project: Project, run_id: int) -> Runner:
        return Runner(project, run_id, workers=workers, executor=executor, **runner_options)

    project, run_id = prepare_run(project_dir, protocol, raw, label=label, db_url=db_url,
                                  base_dir=base_dir, runner_factory=factory)
    return project, factory(project, run_id).execute()
