"""The ``cryoweave`` command (and the ``run-protocol`` alias).

User errors print one message without a traceback (``--debug`` shows it) and exit non-zero.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.table import Table

from cryoweave import __version__
from cryoweave._cli_common import (
    EXIT_RUN_FAILED,
    EXIT_USER_ERROR,
    db_option,
    err,
    open_project,
    out,
    output_set,
    project_option,
    resolve_device,
)
from cryoweave._cli_tools import demo, docs, downsample, simulate, view
from cryoweave.errors import CryoweaveError, InputError, ParamError, StorageError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cryoweave")
@click.option("--debug", is_flag=True, help="Show tracebacks of errors.")
def cli(debug: bool) -> None:
    """cryoweave: cryo-EM processing protocols with a streaming workflow runtime."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False), default=".")
@db_option
def init(directory: str, db_url: str | None) -> None:
    """Create a project folder (project.sqlite, Runs/, Cache/)."""
    from cryoweave.workflow import Project

    with Project.create(directory, db_url) as project:
        out.print(f"project ready at {project.root} ({project.db_url})")


@cli.command()
def protocols() -> None:
    """List the protocols of every installed plugin."""
    from cryoweave.plugin import registry

    table = Table("protocol", "plugin", "label", "inputs", "outputs")
    for cls in registry().protocols():
        inputs = ", ".join(f"{n}:{s.kind}" for n, s in cls.inputs().items())
        outputs = ", ".join(f"{n}:{t.kind}" for n, t in cls.outputs().items())
        table.add_row(cls.__name__, cls.plugin, cls.label, inputs, outputs)
    out.print(table)


@cli.command()
@click.argument("name")
def form(name: str) -> None:
    """Print the JSON Schema of a protocol's parameters (what a GUI form renders)."""
    from cryoweave.plugin import registry

    click.echo(json.dumps(registry().get(name).form_schema(), indent=2))


def _load_params(path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file}: params file not found")
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from exc


def _outputs_report(project: Any, run_id: int) -> dict[str, Any]:
    from sqlalchemy import select

    from cryoweave.workflow import set_handle
    from cryoweave.workflow._export import set_files
    from cryoweave.workflow._schema import SetRow

    with project.reader() as s:
        rows = list(s.scalars(select(SetRow).where(SetRow.run_id == run_id)))
    report = {}
    for row in rows:
        handle = set_handle(project, row.id, row.kind)
        report[row.name] = {"set": row.id, "kind": row.kind, "state": row.state,
                            "size": handle.count(), "files": set_files(handle)}
    return report


def _execute(project: Any, run_id: int, *, resume: bool, workers: int, executor: str,
             threads: int | None, device: str, as_json: bool, quiet: bool) -> None:
    from cryoweave._progress import RichRunProgress
    from cryoweave.workflow.runner import Runner

    with RichRunProgress(err, enabled=not quiet) as progress:
        runner = Runner(project, run_id, workers=workers, executor=executor, threads=threads,
                        device=device, progress=progress)
        summary = runner.execute(resume=resume)
    outputs = _outputs_report(project, run_id)
    if as_json:
        click.echo(json.dumps({"run": run_id, "status": summary.status, "error": summary.error,
                               "outputs": outputs}, indent=2))
    else:
        line = (f"run {run_id} {summary.status} in {summary.seconds:.1f} s "
                f"({summary.steps_run} steps run, {summary.steps_skipped} skipped)")
        (out if summary.status == "finished" else err).print(line)
        for name, info in outputs.items():
            out.print(f"  {name}: set {info['set']}, {info['size']} {info['kind']}, "
                      f"{info['state']}")
    if summary.status != "finished":
        if not as_json:
            err.print(f"[red]error:[/red] {escape(summary.error or '')}", soft_wrap=True)
            err.print(f"log: {project.root / project.get_run(run_id).folder / 'logs/run.log'}")
        sys.exit(EXIT_RUN_FAILED)


def _run_protocol_options(func: Any) -> Any:
    options = [
        click.argument("name", required=False),
        click.argument("params_file", required=False, type=click.Path(dir_okay=False)),
        project_option, db_option,
        click.option("--continue", "continue_run", default=None, metavar="RUN",
                     help="Resume RUN (id or label): finished steps are skipped."),
        click.option("--label", default=None, help="A unique label for the new run."),
        click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
                     help="Steps run at the same time."),
        click.option("--executor", default="threads", show_default=True,
                     type=click.Choice(["threads", "processes", "dask"])),
        click.option("--threads", default=None, type=click.IntRange(1),
                     help="Engine threads per step (FFT workers); default cores/workers."),
        click.option("--device", default="auto", show_default=True,
                     type=click.Choice(["auto", "cpu", "gpu"])),
        click.option("--json", "as_json", is_flag=True, help="Print a JSON summary."),
        click.option("--quiet", is_flag=True, help="No progress bars."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command("run-protocol")
@_run_protocol_options
def run_protocol_cmd(name: str | None, params_file: str | None, project_dir: str,
                     db_url: str | None, continue_run: str | None, label: str | None,
                     workers: int, executor: str, threads: int | None, device: str,
                     as_json: bool, quiet: bool) -> None:
    """Run protocol NAME with the parameters in PARAMS_FILE (JSON), in the foreground."""
    from cryoweave.plugin import registry
    from cryoweave.workflow._submit import prepare_run
    from cryoweave.workflow.runner import Runner

    device = resolve_device(device)
    if continue_run is not None:
        project = open_project(project_dir, db_url)
        run = project.get_run(continue_run)
        _execute(project, run.id, resume=True, workers=workers, executor=executor,
                 threads=threads, device=device, as_json=as_json, quiet=quiet)
        return
    if not name or not params_file:
        raise ParamError("give a protocol NAME and a PARAMS_FILE (or --continue RUN); "
                         "`cryoweave protocols` lists the protocols")
    protocol = registry().get(name)
    raw = _load_params(params_file)

    def factory(project: Any, run_id: int) -> Runner:
        return Runner(project, run_id, workers=workers, executor=executor, threads=threads,
                      device=device)

    project, run_id = prepare_run(project_dir, protocol, raw, label=label, db_url=db_url,
                                  runner_factory=factory)
    _execute(project, run_id, resume=False, workers=workers, executor=executor,
             threads=threads, device=device, as_json=as_json, quiet=quiet)


def _run_state(run: Any) -> str:
    from cryoweave.workflow._project import pid_alive

    if run.status == "running" and not pid_alive(run.pid):
        return "running (process gone: continue it)"
    return run.status


@cli.command()
@project_option
@db_option
def runs(project_dir: str, db_url: str | None) -> None:
    """List the runs of a project."""
    project = open_project(project_dir, db_url)
    table = Table("id", "label", "protocol", "status", "started", "duration", "outputs")
    for run in project.list_runs():
        outputs = _outputs_report(project, run.id)
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run.started_at)) \
            if run.started_at else ""
        duration = f"{run.finished_at - run.started_at:.1f} s" \
            if run.started_at and run.finished_at else ""
        table.add_row(str(run.id), run.label or "", run.protocol, _run_state(run), started,
                      duration, ", ".join(f"{n}: {o['size']} ({o['state']})"
                                          for n, o in outputs.items()))
    out.print(table)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@project_option
@db_option
def show(run_ref: str, project_dir: str, db_url: str | None) -> None:
    """Show a run: parameters, status, steps, outputs and recent problems."""
    from sqlalchemy import func, select

    from cryoweave.workflow._schema import Event, StepRow

    project = open_project(project_dir, db_url)
    run = project.get_run(run_ref)
    out.print(f"[bold]run {run.id}[/bold] {run.label or ''} {run.protocol}: {_run_state(run)}")
    if run.error:
        out.print(f"[red]error:[/red] {run.error}")
    out.print(f"folder: {project.root / run.folder}")
    out.print("params: " + json.dumps(run.params, indent=2))
    with project.reader() as s:
        counts = dict(s.execute(select(StepRow.status, func.count()).where(
            StepRow.run_id == run.id).group_by(StepRow.status)).all())
        events = list(s.scalars(select(Event).where(Event.run_id == run.id,
                                                    Event.level == "error")
                                .order_by(Event.id.desc()).limit(10)))
        devices = _step_devices(s, run.id)
    out.print("steps: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"))
    for device, keys in sorted(devices.items()):
        more = f", … ({len(keys)} steps)" if len(keys) > 6 else ""
        out.print(f"device {device.upper()}: {', '.join(keys[:6])}{more}")
    for name, info in _outputs_report(project, run.id).items():
        out.print(f"output {name}: set {info['set']}, {info['size']} {info['kind']}, "
                  f"{info['state']}")
    for event in reversed(events):
        item = (event.data or {}).get("item_id")
        where = f" (item {item})" if item is not None else ""
        out.print(f"[red]{event.kind}[/red]{where}: {event.message}")


def _step_devices(session: Any, run_id: int) -> dict[str, list[str]]:
    """The finished steps of a run by the device they recorded ("cpu"/"gpu"), keys in order."""
    from sqlalchemy import select

    from cryoweave.workflow._schema import StepRow

    devices: dict[str, list[str]] = {}
    for key, result in session.execute(select(StepRow.key, StepRow.result).where(
            StepRow.run_id == run_id).order_by(StepRow.id)).all():
        device = (result or {}).get("device") if isinstance(result, dict) else None
        if device:
            devices.setdefault(str(device), []).append(key)
    return devices


@cli.command()
@click.argument("run_ref", metavar="RUN")
@project_option
@db_option
def stop(run_ref: str, project_dir: str, db_url: str | None) -> None:
    """Ask a running run to stop (a streaming import closes its output)."""
    from cryoweave.workflow.runner import request_stop

    run = request_stop(open_project(project_dir, db_url), run_ref)
    out.print(f"stop requested for run {run.id} ({run.status})")


@cli.command()
@click.argument("target", metavar="RUN.OUTPUT")
@click.argument("path", type=click.Path(dir_okay=False))
@project_option
@db_option
def export(target: str, path: str, project_dir: str, db_url: str | None) -> None:
    """Export an output: particles/micrographs → RELION 3.1 STAR, volume → MRC."""
    from cryoweave.workflow._export import export_set

    project = open_project(project_dir, db_url)
    for written in export_set(output_set(project, target), path):
        out.print(f"wrote {written}")


@cli.group()
def workflow() -> None:
    """Run several protocols together (streaming consumers alongside producers)."""


@workflow.command("run")
@click.argument("workflow_file", type=click.Path(dir_okay=False))
@project_option
@db_option
@click.option("--continue", "resume", is_flag=True,
              help="Resume: runs whose label exists are continued, the others created.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1),
              help="Steps at the same time, per run.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "gpu"]))
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary at the end.")
def workflow_run(workflow_file: str, project_dir: str, db_url: str | None, resume: bool,
                 workers: int, device: str, as_json: bool) -> None:
    """Create the runs of WORKFLOW_FILE (JSON or YAML) and run them at the same time."""
    from cryoweave._workflow_cli import run_workflow_file

    summary = run_workflow_file(workflow_file, project_dir, db_url=db_url, resume=resume,
                                workers=workers, device=resolve_device(device), console=err)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    failed = {label: status for label, status in summary["status"].items()
              if status != "finished"}
    if failed:
        err.print(f"[red]not finished:[/red] {failed} (see `cryoweave show LABEL`)")
        sys.exit(EXIT_RUN_FAILED)


for _command in (docs, downsample, simulate, view, demo):
    cli.add_command(_command)


def _handle_error(exc: BaseException, debug: bool) -> NoReturn:
    if debug:
        traceback.print_exception(exc)
    if isinstance(exc, click.exceptions.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, click.ClickException):
        exc.show()
        sys.exit(exc.exit_code)
    if isinstance(exc, click.exceptions.Abort | KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    if isinstance(exc, CryoweaveError):
        kind = "storage error" if isinstance(exc, StorageError) else "error"
        err.print(f"[red]{kind}:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USER_ERROR)
    err.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))}\n"
              "run again with --debug for the traceback", highlight=False, soft_wrap=True)
    sys.exit(1)


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None, *, prog: str = "cryoweave",
         command: click.Command = cli) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("CRYOWEAVE_DEBUG") == "1"
    if command is not cli and "--debug" in args:
        args.remove("--debug")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        command.main(args, prog_name=prog, standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        _handle_error(exc, debug)


def run_protocol_main() -> None:
    """The ``run-protocol`` command: ``cryoweave run-protocol`` without the group."""
    main(prog="run-protocol", command=run_protocol_cmd)


if __name__ == "__main__":
    main()
