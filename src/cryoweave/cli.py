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
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cryoweave import __version__
from cryoweave.errors import CryoweaveError, InputError, ParamError, StorageError

out = Console()
err = Console(stderr=True)
EXIT_USER_ERROR = 2
EXIT_RUN_FAILED = 3

project_option = click.option(
    "--project", "project_dir", type=click.Path(file_okay=False), default=".",
    show_default=True, help="Project folder.")
db_option = click.option("--db", "db_url", default=None,
                         help="Database URL (e.g. postgresql://…); default project.sqlite.")


def _open_project(project_dir: str, db_url: str | None = None) -> Any:
    from cryoweave.workflow import Project

    return Project.open(project_dir, db_url)


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


def _resolve_device(device: str) -> str:
    from cryoweave.engine import resolve_device

    try:
        return resolve_device(device)
    except ValueError as exc:
        raise ParamError(f"--device: {exc}") from exc


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

    device = _resolve_device(device)
    if continue_run is not None:
        project = _open_project(project_dir, db_url)
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
    project = _open_project(project_dir, db_url)
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

    project = _open_project(project_dir, db_url)
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
    out.print("steps: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"))
    for name, info in _outputs_report(project, run.id).items():
        out.print(f"output {name}: set {info['set']}, {info['size']} {info['kind']}, "
                  f"{info['state']}")
    for event in reversed(events):
        item = (event.data or {}).get("item_id")
        where = f" (item {item})" if item is not None else ""
        out.print(f"[red]{event.kind}[/red]{where}: {event.message}")


@cli.command()
@click.argument("run_ref", metavar="RUN")
@project_option
@db_option
def stop(run_ref: str, project_dir: str, db_url: str | None) -> None:
    """Ask a running run to stop (a streaming import closes its output)."""
    from cryoweave.workflow.runner import request_stop

    run = request_stop(_open_project(project_dir, db_url), run_ref)
    out.print(f"stop requested for run {run.id} ({run.status})")


@cli.command()
@click.argument("target", metavar="RUN.OUTPUT")
@click.argument("path", type=click.Path(dir_okay=False))
@project_option
@db_option
def export(target: str, path: str, project_dir: str, db_url: str | None) -> None:
    """Export an output: particles/micrographs → RELION 3.1 STAR, volume → MRC."""
    from cryoweave.workflow._export import export_set

    project = _open_project(project_dir, db_url)
    for written in export_set(_output_set(project, target), path):
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
                                workers=workers, device=_resolve_device(device), console=err)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    failed = {label: status for label, status in summary["status"].items()
              if status != "finished"}
    if failed:
        err.print(f"[red]not finished:[/red] {failed} (see `cryoweave show LABEL`)")
        sys.exit(EXIT_RUN_FAILED)


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False), default="docs/protocols")
def docs(folder: str) -> None:
    """Write the protocol reference (markdown) generated from the declarations."""
    from cryoweave.docs import write_reference

    for path in write_reference(folder):
        out.print(f"wrote {path}")


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=False))
@click.option("-D", "--box", "box_px", type=int, default=None,
              help="Target box in pixels (even, ≤ the input box).")
@click.option("--pixel-size", "pixel_size_a", type=float, default=None,
              help="Target pixel size (Å) instead of -D: the box is the closest even value.")
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Output folder for particles.<D>.mrcs and particles.<D>.star.")
@click.option("--datadir", default=None, help="Base folder of relative image paths.")
@click.option("--strip-prefix", default=None, help="Prefix removed from image paths.")
@click.option("--input-pixel-size", type=float, default=None,
              help="Pixel size (Å) of the input images when the file has none.")
@click.option("--batch-size", default=1000, show_default=True, type=int,
              help="Images per batch (bounds memory).")
@click.option("--project", "project_dir", default=None, type=click.Path(file_okay=False),
              help="Use (and fill) this project's cache.")
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "gpu"]))
@click.option("--threads", default=None, type=click.IntRange(1), help="FFT threads.")
def downsample(input_path: str, box_px: int | None, pixel_size_a: float | None, outdir: str,
               datadir: str | None, strip_prefix: str | None, input_pixel_size: float | None,
               batch_size: int, project_dir: str | None, device: str,
               threads: int | None) -> None:
    """Fourier-crop the particles of INPUT (.star, .cs or .mrcs) to a smaller box."""
    from cryoweave._progress import RichRunProgress
    from cryoweave.protocols.downsample import downsample_file

    if box_px is None and pixel_size_a is None:
        raise ParamError("give the target box with -D (e.g. -D 128) or --pixel-size")
    if box_px is not None and pixel_size_a is not None:
        raise ParamError("give -D or --pixel-size, not both")
    device = _resolve_device(device)
    cache_root = None
    if project_dir is not None:
        from cryoweave.workflow import Project

        with Project.open(project_dir, create=True) as project:
            cache_root = project.cache_dir / "downsample"
    started = time.perf_counter()
    with RichRunProgress(err) as progress:
        result = downsample_file(
            input_path, outdir, box_px=box_px, pixel_size_a=pixel_size_a, datadir=datadir,
            strip_prefix=strip_prefix, input_pixel_size_a=input_pixel_size,
            batch_size=batch_size, device=device, threads=threads, cache_root=cache_root,
            progress=lambda done, total: progress.step_progress("images", done, total))
    seconds = time.perf_counter() - started
    rate = f", {result.n_images / seconds:,.0f} images/s" if not result.cache_hit else ""
    out.print(f"{result.n_images} images → {result.stack_path} "
              f"({'from the project cache' if result.cache_hit else 'computed'}, "
              f"{seconds:.1f} s{rate})")
    for _, group in result.table.optics.iterrows():
        out.print(f"  optics group {int(group['group_id'])}: {int(group['box_px'])} px, "
                  f"{group['pixel_size_a']:.6g} Å/px")
    out.print(f"STAR: {result.star_path}")


@cli.command()
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for particles.mrcs, particles.star and truth.mrc.")
@click.option("--phantom", is_flag=True, help="Project the built-in phantom of Gaussian atoms.")
@click.option("--volume", "volume_path", type=click.Path(dir_okay=False), default=None,
              help="Project this map (MRC) instead.")
@click.option("--volume-pixel-size", type=float, default=None,
              help="Pixel size (Å) of --volume when its header has none.")
@click.option("-n", "--n-particles", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--box", "box_px", type=int, default=None, help="Box (px) of the particles.")
@click.option("--pixel-size", "pixel_size_a", type=float, default=None,
              help="Pixel size (Å) of the particles.")
@click.option("--snr", type=float, default=1.0, show_default=True,
              help="Signal-to-noise ratio (variance); 0 for none.")
@click.option("--max-shift", "max_shift_a", type=float, default=0.0, show_default=True,
              help="Shifts (Å) are drawn in a disc of this radius.")
@click.option("--defocus", "defocus_range_a", type=float, nargs=2, default=(10000.0, 30000.0),
              show_default=True, help="Defocus range (Å).")
@click.option("--astigmatism", "astigmatism_a", type=float, default=500.0, show_default=True)
@click.option("--voltage", "voltage_kv", type=float, default=300.0, show_default=True)
@click.option("--cs", "cs_mm", type=float, default=2.7, show_default=True)
@click.option("--amplitude-contrast", type=float, default=0.1, show_default=True)
@click.option("--symmetry", default="c1", show_default=True, help="Symmetry of the phantom.")
@click.option("--seed", default=0, show_default=True, type=int)
def simulate(outdir: str, phantom: bool, volume_path: str | None,
             volume_pixel_size: float | None, **options: Any) -> None:
    """Simulate particles with known poses, shifts, CTF and noise (no project needed)."""
    from pydantic import ValidationError

    from cryoweave._progress import RichRunProgress
    from cryoweave.protocols.reconstruction.simulate import (
        SimulateParticles,
        simulate_to_folder,
    )
    from cryoweave.workflow._runs import _format_pydantic

    if phantom == (volume_path is not None):
        raise ParamError("give --phantom or --volume MAP.mrc (exactly one)")
    if volume_path is not None and not Path(volume_path).is_file():
        raise InputError(f"{volume_path}: map not found")
    options["snr"] = options["snr"] or None
    try:
        params = SimulateParticles.Params.model_validate(
            {**options, "phantom": phantom, "volume": volume_path})
    except ValidationError as exc:
        raise ParamError(_format_pydantic(exc, SimulateParticles.Params)) from exc
    folder = Path(outdir).resolve()
    with RichRunProgress(err) as progress:
        table, settings, sigma = simulate_to_folder(
            params.model_dump(mode="json", exclude={"volume"}),
            str(Path(volume_path).resolve()) if volume_path else None, volume_pixel_size,
            folder, progress=lambda done, total: progress.step_progress("particles", done,
                                                                       total))
    out.print(f"{len(table)} particles {settings.box_px}² at {settings.pixel_size_a:.4g} Å → "
              f"{folder / 'particles.star'} (noise σ {sigma:.4g}); truth: "
              f"{folder / 'truth.mrc'}")


def _output_set(project: Any, target: str) -> Any:
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


@cli.command()
@click.argument("target", metavar="RUN.OUTPUT")
@project_option
@db_option
@click.option("--outdir", default=None, type=click.Path(file_okay=False),
              help="Where to write the pictures (default: the run's extra/view_OUTPUT).")
def view(target: str, project_dir: str, db_url: str | None, outdir: str | None) -> None:
    """Write pictures of an output (thumbnails, power spectra, contact sheet, slices)."""
    from cryoweave.viewers import view_set

    project = _open_project(project_dir, db_url)
    handle = _output_set(project, target)
    if outdir is None:
        run = project.get_run(handle.run_id)
        outdir = str(project.root / run.folder / "extra" / f"view_{handle.name}")
    written = view_set(handle, outdir)
    if not written:
        raise ParamError(f"nothing to show for {target} ({handle.kind} set, "
                         f"{handle.count()} items)")
    for path in written:
        out.print(str(path))


@cli.command()
@project_option
@click.option("--quick", is_flag=True, help="A smaller, faster demo.")
def demo(project_dir: str, quick: bool) -> None:
    """Create a project with synthetic data, import it and print a summary."""
    from cryoweave.demo import run_demo

    target = Path(project_dir)
    if project_dir == ".":
        target = Path("demo_project")
    run_demo(target, console=out, quick=quick)


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
