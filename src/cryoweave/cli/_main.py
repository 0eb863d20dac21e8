"""The ``cryoweave`` command (and the ``run-protocol`` alias).

User errors print one message without a traceback (``--debug`` shows it) and exit non-zero.
Over 400 lines: the click group with one short function per command and the shared error
handling; the other commands already live beside it (``_tools``, ``_workflow``, ``_config``,
``_gui``) — split further along commands, not inside one.
"""

from __future__ import annotations

import atexit
import datetime
import gc
import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any, NoReturn

import click

from cryoweave import __version__
from cryoweave.cli._common import (
    EXIT_RUN_FAILED,
    EXIT_USER_ERROR,
    db_option,
    echo_json,
    err,
    json_option,
    open_project,
    out,
    output_set,
    print_table,
    project_option,
    resolve_device,
    shown_label,
)
from cryoweave.cli._config import config
from cryoweave.cli._gui import gui
from cryoweave.cli._memory import retain_freed_memory
from cryoweave.cli._tools import demo, docs, downsample, simulate, view
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
    from cryoweave.store import Project

    with Project.create(directory, db_url) as project:
        out.print(f"project ready at {project.root} ({project.db_url})")


def escape(text: str) -> str:
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def find_protocol(name: str) -> Any:
    """The protocol called ``name``. Names match case-insensitively (``-`` ignored); when the
    spelling differs from the class name, a notice on stderr says which protocol is used."""
    from cryoweave.plugin import registry

    protocol = registry().get(name)
    if name not in (protocol.__name__, protocol.identity()):
        err.print(f"note: {name!r} taken as {protocol.__name__} ({protocol.identity()})",
                  highlight=False)
    return protocol


@cli.command()
@json_option("the protocols")
def protocols(as_json: bool) -> None:
    """List the protocols of every installed plugin (tab-separated when piped)."""
    from cryoweave.plugin import registry
    from cryoweave.workflow import protocol_dict

    listed = [protocol_dict(cls) for cls in registry().protocols()]
    if as_json:
        echo_json(listed)
        return
    print_table(("protocol", "plugin", "label", "inputs", "outputs"), [
        (p["name"], p["plugin"], p["label"],
         ", ".join(f"{n}:{k}" for n, k in p["inputs"].items()),
         ", ".join(f"{n}:{k}" for n, k in p["outputs"].items())) for p in listed], whole=1)


@cli.command()
@click.argument("name")
def form(name: str) -> None:
    """Print the JSON Schema of a protocol's parameters (what a GUI form renders)."""
    click.echo(json.dumps(find_protocol(name).form_schema(), indent=2))


def _load_params(path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{file.resolve()}: params file not found")
    from cryoweave.workflow import parse_json, read_text_utf8

    text = read_text_utf8(file, "params file")
    try:
        return parse_json(file, text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{file}: not valid JSON ({exc.msg} at line {exc.lineno} column "
                         f"{exc.colno})") from exc
    except RecursionError as exc:
        raise InputError(f"{file}: nested too deeply to be a params file; give a flat "
                         "JSON object of parameters") from exc


def _print_summary(summary: dict[str, Any]) -> None:
    from cryoweave.workflow import format_summary

    if summary:
        out.print(f"summary: {format_summary(summary)}", highlight=False)


def _execute(project: Any, run_id: int, *, resume: bool, workers: int | None, executor: str,
             threads: int | None, device: str, as_json: bool, quiet: bool,
             queue: str | None = None) -> None:
    from cryoweave.cli._progress import RichRunProgress
    from cryoweave.workflow import Runner

    with RichRunProgress(err, enabled=not quiet) as progress:
        runner = Runner(project, run_id, workers=workers, executor=executor, threads=threads,
                        device=device, progress=progress, queue=queue)
        summary = runner.execute(resume=resume)
    from cryoweave.workflow import run_dict

    report = run_dict(project, project.get_run(run_id))
    outputs = report["outputs"]
    if as_json:
        echo_json({"run": run_id, "status": summary.status, "error": summary.error,
                   "failed_items": summary.failed_items, "outputs": outputs,
                   "summary": report["summary"], "details": report})
    else:
        line = (f"run {run_id} {summary.status} in {summary.seconds:.1f} s "
                f"({summary.steps_run} steps run, {summary.steps_skipped} skipped)")
        (out if summary.status == "finished" else err).print(line)
        if summary.failed_items and summary.status == "finished":
            err.print(f"[yellow]warning:[/yellow] {summary.failed_items} input items failed; "
                      f"`cryoweave show {run_id}` lists them", highlight=False)
        for name, info in outputs.items():
            out.print(f"  {name}: set {info['set']}, {info['size']} {info['kind']}, "
                      f"{info['state']}")
        _print_summary(report["summary"])
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
        click.option("--workers", default=None, type=click.IntRange(1),
                     help="Steps run at the same time. Default: what the protocol suggests "
                          "for its independent steps (1 for most), at most the cores."),
        click.option("--executor", default="threads", show_default=True,
                     type=click.Choice(["threads", "processes", "dask"])),
        click.option("--threads", default=None, type=click.IntRange(1),
                     help="Engine threads per step (FFT workers); default: the cores shared "
                          "among the steps that start together."),
        click.option("--device", default=None, type=click.Choice(["auto", "cpu", "gpu"]),
                     help="Default: the configured device (`cryoweave config show`), auto."),
        click.option("--queue", default=None, metavar="NAME",
                     help="Configured queue for the steps (`cryoweave config show`); "
                          "--continue reuses the run's queue unless given."),
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
                     workers: int | None, executor: str, threads: int | None, device: str | None,
                     queue: str | None, as_json: bool, quiet: bool) -> None:
    """Run protocol NAME with the parameters in PARAMS_FILE (JSON), in the foreground.

    NAME matches case-insensitively (a notice says which protocol is used). Relative paths
    inside PARAMS_FILE are taken from PARAMS_FILE's folder; paths on the command line from
    the current folder.
    """
    from cryoweave.workflow import Runner, load_config, prepare_run

    retain_freed_memory()

    config = load_config(Path(project_dir)).config
    config.queue(queue)  # checked before anything is created
    device = resolve_device(device or config.device)
    if continue_run is not None:
        project = open_project(project_dir, db_url)
        run = project.get_run(continue_run)
        _execute(project, run.id, resume=True, workers=workers, executor=executor,
                 threads=threads, device=device, as_json=as_json, quiet=quiet, queue=queue)
        return
    if not name or not params_file:
        raise ParamError("give a protocol NAME and a PARAMS_FILE (or --continue RUN); "
                         "`cryoweave protocols` lists the protocols")
    protocol = find_protocol(name)
    raw = _load_params(params_file)

    def factory(project: Any, run_id: int) -> Runner:
        return Runner(project, run_id, workers=workers, executor=executor, threads=threads,
                      device=device, queue=queue)

    project, run_id = prepare_run(project_dir, protocol, raw, label=label, db_url=db_url,
                                  base_dir=Path(params_file).resolve().parent,
                                  queue=queue, runner_factory=factory)
    _execute(project, run_id, resume=False, workers=workers, executor=executor,
             threads=threads, device=device, as_json=as_json, quiet=quiet, queue=queue)


@cli.command()
@project_option
@db_option
@json_option("the runs (a list of run objects, with their summaries)")
def runs(project_dir: str, db_url: str | None, as_json: bool) -> None:
    """List the runs of a project (tab-separated when piped)."""
    from cryoweave.store import queries

    project = open_project(project_dir, db_url)
    if as_json:
        from cryoweave.workflow import run_dict

        echo_json([run_dict(project, run) for run in queries.run_records(project)])
        return
    rows = []
    for run in queries.list_runs(project, sizes=True):
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(
            datetime.datetime.fromisoformat(run["started_at"]).timestamp())) \
            if run["started_at"] else ""
        duration = f"{run['duration_s']:.1f} s" if run["duration_s"] is not None else ""
        rows.append((run["id"], shown_label(run["label"]), run["protocol_name"], run["state"],
                     started, duration,
                     ", ".join(f"{o['name']}: {o['size']} ({o['state']})"
                               for o in run["outputs"])))
    print_table(("id", "label", "protocol", "status", "started", "duration", "outputs"), rows,
                whole=4)


@cli.command()
@click.argument("run_ref", metavar="RUN")
@project_option
@db_option
@json_option("the run object")
def show(run_ref: str, project_dir: str, db_url: str | None, as_json: bool) -> None:
    """Show a run: parameters, status, steps, outputs, summary and recent problems."""
    from cryoweave.store import queries
    from cryoweave.workflow import run_dict

    project = open_project(project_dir, db_url)
    run = queries.get_run(project, run_ref)  # read without the ORM (start-up: issue 14)
    report = run_dict(project, run)
    if as_json:
        echo_json(report)
        return
    out.print(f"[bold]run {run.id}[/bold] {escape(shown_label(run.label))} {run.protocol}: "
              f"{report['state']}")
    if run.error:
        out.print(f"[red]error:[/red] {escape(run.error)}")
    out.print(f"folder: {report['folder']}", highlight=False)
    out.print("params: " + json.dumps(run.params, indent=2), highlight=False, markup=False)
    events = queries.run_events(project, run.id, limit=10, level="error")
    counts = report["steps"]
    out.print("steps: " + (", ".join(f"{n} {k}" for k, n in counts.items()) or "none"))
    for device, keys in sorted(report["devices"].items()):
        more = f", … ({len(keys)} steps)" if len(keys) > 6 else ""
        out.print(f"device {device.upper()}: {', '.join(keys[:6])}{more}")
    if report["failed_items"]:
        out.print(f"[red]failed items: {report['failed_items']}[/red] "
                  "(the latest are listed below)")
    for name, info in report["outputs"].items():
        out.print(f"output {name}: set {info['set']}, {info['size']} {info['kind']}, "
                  f"{info['state']}")
    _print_summary(report["summary"])
    for event in events:  # oldest first
        item = (event["data"] or {}).get("item_id")
        where = f" (item {item})" if item is not None else ""
        out.print(f"[red]{event['kind']}[/red]{where}: {event['message']}")


@cli.command()
@click.argument("run_ref", metavar="RUN")
@project_option
@db_option
def stop(run_ref: str, project_dir: str, db_url: str | None) -> None:
    """Ask a running run to stop (a streaming import closes its output)."""
    from cryoweave.workflow import stop as request_stop

    run = request_stop(open_project(project_dir, db_url), run_ref)
    out.print(f"stop requested for run {run.id} ({run.status})")


@cli.command()
@click.argument("target", metavar="RUN.OUTPUT")
@click.argument("path", type=click.Path())
@project_option
@db_option
@click.option("--copy-stacks", is_flag=True,
              help="Particles: copy the image stacks next to the STAR (a self-contained "
                   "export; the STAR refers to them relatively).")
def export(target: str, path: str, project_dir: str, db_url: str | None,
           copy_stacks: bool) -> None:
    """Export an output: particles/micrographs → RELION 3.1 STAR (PATH a .star name, or a
    folder that gets particles.star / micrographs.star), volume → MRC (.mrc/.map), FSC →
    RELION-style fsc.star or .csv. PATH is taken from the current folder."""
    from cryoweave.workflow import export_set

    project = open_project(project_dir, db_url)
    for written in export_set(output_set(project, target), path, copy_stacks=copy_stacks):
        click.echo(f"wrote {written}")


@cli.group()
def workflow() -> None:
    """Run several protocols together (streaming consumers alongside producers)."""


@workflow.command("run")
@click.argument("workflow_file", type=click.Path(dir_okay=False))
@project_option
@db_option
@click.option("--continue", "resume", is_flag=True,
              help="Resume: runs whose label exists are continued, the others created.")
@click.option("--workers", default=None, type=click.IntRange(1),
              help="Steps at the same time, per run. Default: what each protocol suggests "
                   "for its independent steps (1 for most), at most the cores.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "gpu"]))
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON summary at the end (also after Ctrl-C: state interrupted).")
def workflow_run(workflow_file: str, project_dir: str, db_url: str | None, resume: bool,
                 workers: int | None, device: str, as_json: bool) -> None:
    """Create the runs of WORKFLOW_FILE (JSON or YAML) and run them at the same time.

    Relative paths inside WORKFLOW_FILE are taken from its folder.
    """
    from cryoweave.cli._workflow import run_workflow_file

    retain_freed_memory()

    summary = run_workflow_file(workflow_file, project_dir, db_url=db_url, resume=resume,
                                workers=workers, device=resolve_device(device),
                                console=err.console)
    if as_json:
        echo_json(summary)
    if summary["state"] == "interrupted":
        err.print("interrupted")
        sys.exit(130)
    failed = {label: status for label, status in summary["status"].items()
              if status != "finished"}
    if failed:
        err.print(f"[red]not finished:[/red] {failed} (see `cryoweave show LABEL`)")
        sys.exit(EXIT_RUN_FAILED)


for _command in (docs, downsample, simulate, view, demo, config, gui):
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


_EXIT_HOOKED = False


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _skip_exit_collection() -> None:
    """At interpreter exit, before its final garbage collections: move every object to the
    permanent generation, so exit does not walk the objects of pandas, SciPy, matplotlib and
    SQLAlchemy once more (about 0.4 s of each command; `benchmarks/process_costs.py`). It runs
    after the command's work: outputs are closed and the database committed by then."""
    gc.freeze()


def main(argv: list[str] | None = None, *, prog: str = "cryoweave",
         command: click.Command = cli) -> None:
    global _EXIT_HOOKED
    if not _EXIT_HOOKED:
        atexit.register(_skip_exit_collection)  # atexit runs before the final collections
        _EXIT_HOOKED = True
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
