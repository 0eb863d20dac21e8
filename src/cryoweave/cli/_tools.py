"""Commands that stand alone: downsample, simulate, view, docs, demo."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from cryoweave.cli._common import (
    db_option,
    echo_json,
    err,
    json_option,
    open_project,
    out,
    output_set,
    project_option,
    resolve_device,
)
from cryoweave.cli._memory import retain_freed_memory
from cryoweave.errors import InputError, ParamError


@click.command()
@click.argument("folder", type=click.Path(file_okay=False), default="docs/protocols")
def docs(folder: str) -> None:
    """Write the protocol reference (markdown) generated from the declarations."""
    from cryoweave.cli._docs import write_reference

    for path in write_reference(folder):
        out.print(f"wrote {path}")


def _keep_pyarrow_out() -> None:
    """Make pandas load without pyarrow in this process (when pandas is not loaded yet).

    cryoweave never uses pyarrow; starfile requires it, and pandas ≥ 3 imports it whenever
    it is installed, then backs every string column (the image paths) with Arrow arrays. In
    `cryoweave downsample`, which loads no plugins, that cost 0.17 s of 1.35 s (median of 10
    alternating runs, `benchmarks/compare_trees.py --command downsample`): the import, and
    Arrow conversions in the STAR writer.
    A None entry in sys.modules makes Python report the module absent. Called in a process
    where pandas is already loaded (tests, the GUI), it changes nothing."""
    import sys

    if "pandas" not in sys.modules:
        sys.modules.setdefault("pyarrow", None)


@contextmanager
def _image_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar of images on stderr when it is a terminal (otherwise nothing, without
    importing rich.progress); light: the run progress of `cryoweave.cli._progress` would load
    the workflow runtime."""
    if not err.is_terminal:  # asked without importing rich (`LazyConsole`)
        yield lambda done, total: None
        return
    console = getattr(err, "console", err)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(TextColumn("[bold]images"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("images", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


@click.command()
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
    retain_freed_memory()
    _keep_pyarrow_out()
    from cryoweave.protocols.downsample import downsample_file

    if box_px is None and pixel_size_a is None:
        raise ParamError("give the target box with -D (e.g. -D 128) or --pixel-size")
    if box_px is not None and pixel_size_a is not None:
        raise ParamError("give -D or --pixel-size, not both")
    device = resolve_device(device)
    cache_root = None
    new_project = project_dir is not None and not Path(project_dir).exists()
    if project_dir is not None:
        from cryoweave.store import Project

        with Project.open(project_dir, create=True) as project:
            cache_root = project.cache_dir / "downsample"
    started = time.perf_counter()
    try:
        with _image_progress() as progress:
            result = downsample_file(
                input_path, outdir, box_px=box_px, pixel_size_a=pixel_size_a,
                datadir=datadir, strip_prefix=strip_prefix,
                input_pixel_size_a=input_pixel_size, batch_size=batch_size, device=device,
                threads=threads, cache_root=cache_root, progress=progress)
    except BaseException:
        if new_project:  # created by this command only: a failed command leaves nothing
            shutil.rmtree(project_dir, ignore_errors=True)
        raise
    seconds = time.perf_counter() - started
    rate = f", {result.n_images / seconds:,.0f} images/s" if not result.cache_hit else ""
    # plain lines: no rich import at the end of a timed command, and a path such as
    # "run[x]" is printed as it is, not read as markup
    click.echo(f"{result.n_images} images → {result.stack_path} "
               f"({'from the project cache' if result.cache_hit else 'computed'}, "
               f"{seconds:.1f} s{rate})")
    for _, group in result.table.optics.iterrows():
        click.echo(f"  optics group {int(group['group_id'])}: {int(group['box_px'])} px, "
                   f"{group['pixel_size_a']:.6g} Å/px")
    click.echo(f"STAR: {result.star_path}")


@click.command()
@click.option("-o", "--outdir", required=True, type=click.Path(file_okay=False),
              help="Folder for particles.mrcs, particles.star and truth.mrc.")
@click.option("--phantom", is_flag=True, help="Project the built-in phantom of Gaussian atoms.")
@click.option("--volume", "volume_path", type=click.Path(dir_okay=False), default=None,
              help="Project this map (MRC) instead.")
@click.option("--volume-pixel-size", type=float, default=None,
              help="Pixel size (Å) of --volume when its header has none.")
@click.option("-n", "--n-particles", default=1000, show_default=True, type=click.IntRange(1))
@click.option("--box", "box_px", type=int, default=None,
              help="Box (px) of the particles.  [default: the map's; 64 with --phantom]")
@click.option("--pixel-size", "pixel_size_a", type=float, default=None,
              help="Pixel size (Å) of the particles.  [default: the map's; 2 Å with "
                   "--phantom]")
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
@click.option("--device", default="auto", show_default=True,
              type=click.Choice(["auto", "cpu", "gpu"]), help="Where the projections run.")
def simulate(outdir: str, phantom: bool, volume_path: str | None,
             volume_pixel_size: float | None, device: str, **options: Any) -> None:
    """Simulate particles with known poses, shifts, CTF and noise (no project needed)."""
    retain_freed_memory()
    from pydantic import ValidationError

    from cryoweave.cli._progress import RichRunProgress
    from cryoweave.protocols.reconstruction.simulate import (
        SimulateParticles,
        simulate_to_folder,
    )
    from cryoweave.workflow import format_validation_error

    if phantom == (volume_path is not None):
        raise ParamError("give --phantom or --volume MAP.mrc (exactly one)")
    if volume_path is not None and not Path(volume_path).is_file():
        raise InputError(f"{volume_path}: map not found")
    options["snr"] = options["snr"] or None
    try:
        params = SimulateParticles.Params.model_validate(
            {**options, "phantom": phantom, "volume": volume_path})
    except ValidationError as exc:
        raise ParamError(format_validation_error(exc, SimulateParticles.Params)) from exc
    folder = Path(outdir).resolve()
    device = resolve_device(device)
    with RichRunProgress(err) as progress:
        table, settings, sigma = simulate_to_folder(
            params.model_dump(mode="json", exclude={"volume"}),
            str(Path(volume_path).resolve()) if volume_path else None, volume_pixel_size,
            folder, progress=lambda done, total: progress.step_progress("particles", done,
                                                                       total), device=device)
    out.print(f"{len(table)} particles {settings.box_px}² at {settings.pixel_size_a:.4g} Å → "
              f"{folder / 'particles.star'} (noise σ {sigma:.4g}); truth: "
              f"{folder / 'truth.mrc'}")


@click.command()
@click.argument("target", metavar="RUN.OUTPUT")
@project_option
@db_option
@click.option("--outdir", default=None, type=click.Path(file_okay=False),
              help="Where to write the pictures (default: the run's extra/view_OUTPUT).")
@json_option("the set and the files written")
def view(target: str, project_dir: str, db_url: str | None, outdir: str | None,
         as_json: bool) -> None:
    """Write pictures of an output (thumbnails, power spectra, contact sheet, slices, FSC
    plots) and print their paths, one a line."""
    from cryoweave.viewers import view_set

    project = open_project(project_dir, db_url)
    handle = output_set(project, target)
    if outdir is None:
        run = project.get_run(handle.run_id)
        outdir = str(project.root / run.folder / "extra" / f"view_{handle.name}")
    written = view_set(handle, outdir)
    if not written:
        raise ParamError(f"nothing to show for {target} ({handle.kind} set, "
                         f"{handle.count()} items)")
    if as_json:
        from cryoweave.workflow import set_dict

        echo_json({"target": target, "run": handle.run_id, "set": set_dict(handle, files=False),
                   "folder": str(Path(outdir).resolve()),
                   "files": [str(Path(p).resolve()) for p in written]})
        return
    for path in written:
        click.echo(str(Path(path).resolve()))


@click.command()
@project_option
@click.option("--quick", is_flag=True, help="A smaller, faster demo.")
def demo(project_dir: str, quick: bool) -> None:
    """Run the built-in protocols on synthetic data (streaming preprocessing, downsampling,
    simulation, reconstruction, refinement) in demo_project/ and print what they found."""
    retain_freed_memory()
    from cryoweave.demo import run_demo

    target = Path(project_dir)
    if project_dir == ".":
        target = Path("demo_project")
    run_demo(target, console=out.console, quick=quick)
