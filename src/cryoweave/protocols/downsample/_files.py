"""Stand-alone downsampling of a STAR/.cs/.mrcs file (``cryoweave downsample``), no project
needed; with a project, its cache is used."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from cryoweave.errors import InputError, ParamError
from cryoweave.formats import (
    ParticleTable,
    read_particles,
    temporary_path,
    write_star_blocks,
)
from cryoweave.formats.star import particles_to_blocks
from cryoweave.physical import MAX_BATCH_IMAGES, PIXEL_SIZE_A
from cryoweave.protocols._shared.checks import require_pixel_sizes, verify_stacks
from cryoweave.protocols.downsample._cache import DownsampleCache, cache_key
from cryoweave.protocols.downsample._rewrite import (
    downsampled_table,
    stack_name,
    star_name,
    target_box,
)
from cryoweave.protocols.downsample._stack import downsample_stack

CLI_FIX = "pass --input-pixel-size (the pixel size of the input images in Å)"


@dataclass
class DownsampleResult:
    star_path: Path
    stack_path: Path
    table: ParticleTable
    n_images: int
    seconds: float
    cache_hit: bool


def load_checked(path: Path, *, datadir: str | None, strip_prefix: str | None,
                 input_pixel_size_a: float | None) -> ParticleTable:
    """Read particles and check every stack and the pixel size before anything is written."""
    table = read_particles(path, datadir=datadir, strip_prefix=strip_prefix,
                           pixel_size_a=input_pixel_size_a)
    if not len(table):
        raise InputError(f"{path}: no particles")
    verify_stacks(table, path)
    require_pixel_sizes(table, path, CLI_FIX)
    return table


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


@contextmanager
def _output_folder(outdir: Path) -> Iterator[None]:
    """Create ``outdir`` (and missing parents); remove the ones created here on an error."""
    created = [d for d in [outdir, *outdir.parents] if not d.exists()]
    outdir.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for folder in created:  # deepest first; only if still empty
            with suppress(OSError):
                folder.rmdir()
        raise


def downsample_file(path: str | Path, outdir: str | Path, *, box_px: int | None = None,
                    pixel_size_a: float | None = None, datadir: str | None = None,
                    strip_prefix: str | None = None, input_pixel_size_a: float | None = None,
                    batch_size: int = 1000, device: str = "cpu", threads: int | None = None,
                    cache_root: Path | None = None,
                    progress: Callable[[int, int], None] | None = None) -> DownsampleResult:
    """Write ``outdir/particles.<d>.mrcs`` and ``outdir/particles.<d>.star`` for ``path``."""
    path = Path(path)
    outdir = Path(outdir)
    if not 1 <= batch_size <= MAX_BATCH_IMAGES:
        raise ParamError(f"--batch-size={batch_size} must be from 1 to {MAX_BATCH_IMAGES:,} "
                         "images (the default is 1000)")
    for option, value in (("--pixel-size", pixel_size_a),
                          ("--input-pixel-size", input_pixel_size_a)):
        if value is not None and not PIXEL_SIZE_A.contains(value):
            raise ParamError(f"{option}={value:g} is out of range; expected "
                             f"{PIXEL_SIZE_A.describe()}")
    table = load_checked(path, datadir=datadir, strip_prefix=strip_prefix,
                         input_pixel_size_a=input_pixel_size_a)
    box = target_box(table, box_px, pixel_size_a, CLI_FIX)
    stack_path = (outdir / stack_name(box)).resolve()
    star_path = (outdir / star_name(box)).resolve()
    inputs = {str(Path(p).resolve()) for p in table.particles["image_path"].unique()}
    if str(stack_path) in inputs or star_path == path.resolve():
        raise ParamError(f"the output {stack_path.name} in {outdir} would overwrite an input "
                         "file; choose another output folder")
    out_table = downsampled_table(table, box, stack_path, CLI_FIX)
    voxel = float(out_table.optics["pixel_size_a"].iloc[0])

    def build(target: Path) -> dict:
        stats = downsample_stack(table, box, target, voxel, batch_size=batch_size,
                                 device=device, threads=threads, progress=progress)
        return {"n_images": stats.n_images, "box_px": box, "source": str(path.resolve())}

    # both files are written under temporary names and renamed when both are complete: a
    # failed command leaves neither (nor a folder it created). The STAR does not depend on the
    # pixels, so one thread writes it while the stack is computed (its text takes ~0.1 s of
    # Python for 5,000 rows, which the image threads, in C most of the time, hardly notice)
    with _output_folder(outdir), ThreadPoolExecutor(1, "downsample-star") as star_writer:
        tmp_stack, tmp_star = temporary_path(stack_path), temporary_path(star_path)
        placed: list[Path] = []
        star_written = star_writer.submit(
            lambda: write_star_blocks(tmp_star, particles_to_blocks(out_table, star_path.parent)))
        try:
            if cache_root is not None:
                key = cache_key(table, box, datadir, strip_prefix)
                entry = DownsampleCache(cache_root).get_or_build(key, stack_name(box), build)
                _link_or_copy(entry.stack_path, tmp_stack)
                seconds, hit = float(entry.manifest.get("seconds", 0.0)), entry.hit
            else:
                seconds, hit = float(build(tmp_stack) and 0.0), False
            star_written.result()
            for tmp, final in ((tmp_stack, stack_path), (tmp_star, star_path)):
                os.replace(tmp, final)
                placed.append(final)
        except BaseException:
            wait([star_written])  # it may still be writing the temporary STAR
            for leftover in (tmp_stack, tmp_star, *placed):
                leftover.unlink(missing_ok=True)
            raise
    return DownsampleResult(star_path, stack_path, out_table, len(table), seconds, hit)
