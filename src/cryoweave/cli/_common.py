"""What the command modules share: consoles, common options, opening projects and outputs."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from cryoweave.errors import ParamError

_FORCE_TERMINAL = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


class LazyConsole:
    """A rich ``Console`` made on first use (rich is not imported by ``--help``).

    Soft wrap: lines are never broken by rich (a path stays whole when piped or copied).
    """

    def __init__(self, *, stderr: bool = False):
        self._stderr = stderr
        self._console: Any = None

    @property
    def console(self) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, soft_wrap=True)
        return self._console

    @property
    def is_terminal(self) -> bool:
        """rich's answer, without importing rich for a stream that is no terminal (a pipe, a
        log) unless the environment forces one (FORCE_COLOR, TTY_COMPATIBLE, TTY_INTERACTIVE
        are rich's own switches)."""
        if self._console is None:
            stream = sys.stderr if self._stderr else sys.stdout
            try:
                tty = stream.isatty()
            except (AttributeError, ValueError):  # replaced or closed stream
                tty = False
            if not tty and not any(os.environ.get(name) for name in _FORCE_TERMINAL):
                return False
        return bool(self.console.is_terminal)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


out: Any = LazyConsole()
err: Any = LazyConsole(stderr=True)
EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 3

project_option = click.option(
    "--project", "project_dir", type=click.Path(file_okay=False), default=".",
    show_default=True, help="Project folder.")
db_option = click.option("--db", "db_url", default=None,
                         help="Database URL (e.g. postgresql://…); default project.sqlite.")


def json_option(what: str) -> Any:
    return click.option("--json", "as_json", is_flag=True,
                        help=f"Print {what} as JSON (keys: see cryoweave.workflow._report).")


def echo_json(data: Any) -> None:
    """JSON on stdout, nothing else (scripts parse it)."""
    click.echo(json.dumps(data, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *,
                whole: int = 0) -> None:
    """A table on stdout: on a terminal, a rich table whose cells wrap or fold (never cut
    with …), the first ``whole`` columns (names, labels) kept on one line; otherwise (a
    pipe, a file) tab-separated lines with a header line, nothing cut."""
    if not sys.stdout.isatty():
        for row in [headers, *rows]:
            click.echo("\t".join(str(c).replace("\t", " ").replace("\n", " ") for c in row))
        return
    from rich.table import Table

    table = Table(*headers)
    for index, column in enumerate(table.columns):
        column.overflow = "fold"
        column.no_wrap = index < whole
    from rich.markup import escape

    for row in rows:
        table.add_row(*(escape(str(c)) for c in row))
    out.print(table, soft_wrap=False)


def shown_label(label: str | None) -> str:
    """A run label for output: control characters (refused for new labels, possible in
    older projects) written as escapes, never sent raw to a terminal."""
    from cryoweave.store import label_problem

    if not label:
        return ""
    return repr(label)[1:-1] if label_problem(label) else label


def open_project(project_dir: str, db_url: str | None = None) -> Any:
    from cryoweave.store import Project

    return Project.open(project_dir, db_url)


def resolve_device(device: str) -> str:
    from cryoweave.engine import resolve_device

    try:
        return resolve_device(device)
    except ValueError as exc:
        raise ParamError(f"--device: {exc}") from exc


def output_set(project: Any, target: str) -> Any:
    from cryoweave.store import queries, set_handle

    run_ref, _, output = target.rpartition(".")
    if not run_ref or not output:
        raise ParamError(f"expected RUN.OUTPUT (e.g. 3.particles), got {target!r}")
    run = project.get_run(run_ref)
    outputs = queries.run_outputs(project, run.id)
    found = next((o for o in outputs if o["name"] == output), None)
    if found is None:
        names = ", ".join(o["name"] for o in outputs)
        raise ParamError(f"run {run.id} has no output {output!r}; outputs: {names}")
    return set_handle(project, found["set"], found["kind"])
