"""What the command modules share: consoles, common options, opening projects and outputs."""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from cryoweave.errors import ParamError

out = Console()
err = Console(stderr=True)
EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 3

project_option = click.option(
    "--project", "project_dir", type=click.Path(file_okay=False), default=".",
    show_default=True, help="Project folder.")
db_option = click.option("--db", "db_url", default=None,
                         help="Database URL (e.g. postgresql://…); default project.sqlite.")


def open_project(project_dir: str, db_url: str | None = None) -> Any:
    from cryoweave.workflow import Project

    return Project.open(project_dir, db_url)


def resolve_device(device: str) -> str:
    from cryoweave.engine import resolve_device

    try:
        return resolve_device(device)
    except ValueError as exc:
        raise ParamError(f"--device: {exc}") from exc


def output_set(project: Any, target: str) -> Any:
    from sqlalchemy import select

    from cryoweave.workflow import set_handle
    from cryoweave.workflow._schema import SetRow

    run_ref, _, output = target.rpartition(".")
    if not run_ref or not output:
        raise ParamError(f"expected RUN.OUTPUT (e.g. 3.particles), got {target!r}")
    run = project.get_run(run_ref)
    with project.reader() as s:
        row = s.scalar(select(SetRow).where(SetRow.run_id == run.id, SetRow.name == output))
        names = list(s.scalars(select(SetRow.name).where(SetRow.run_id == run.id)))
    if row is None:
        raise ParamError(f"run {run.id} has no output {output!r}; outputs: {', '.join(names)}")
    return set_handle(project, row.id, row.kind)
