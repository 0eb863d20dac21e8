"""ImportParticles: a RELION STAR, cryoSPARC .cs or MRC stack becomes a particle set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cryoweave.errors import InputError
from cryoweave.formats import PARTICLE_SUFFIXES, ParticleTable, read_particles
from cryoweave.physical import PIXEL_SIZE_A
from cryoweave.plugin import (
    EXPERT,
    ParticleSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    SetPreview,
    Step,
    StepContext,
    StepResult,
    SummaryContext,
    param,
)
from cryoweave.protocols._shared.checks import require_pixel_sizes, verify_stacks
from cryoweave.protocols._shared.params import datadir_param, strip_prefix_param
from cryoweave.protocols._shared.summary import set_summary


class ImportParticles(Protocol):
    """Import particles from a RELION 3.0/3.1+ STAR file, a cryoSPARC .cs file or an MRC stack.

    Every STAR column is kept (unknown ones pass through to exports). Stacks are checked:
    they must exist, be complete, hold square images of one box size per optics group, and
    contain every referenced image. Shifts are stored in Å (RELION 3.0 pixel origins are
    converted with the group's pixel size).
    """

    label = "import particles"

    class Params(ProtocolParams):
        path: str = param(description="Particle file: .star, .cs or .mrcs", section="Input",
                          path=True)
        pixel_size_a: float | None = param(
            None, **PIXEL_SIZE_A.bounds(), unit="Å", section="Input",
            description="Pixel size of the images; overrides the file's (required when the "
                        "file has none)")
        datadir: str | None = datadir_param()
        strip_prefix: str | None = strip_prefix_param()
        check_stacks: bool = param(
            True, section="Input", expert=EXPERT,
            description="Check that every referenced stack exists, is complete and holds the "
                        "referenced images")

    class Outputs(ProtocolOutputs):
        particles: ParticleSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        path = Path(params.path)
        if path.suffix.lower() not in PARTICLE_SUFFIXES:
            return [f"parameter 'path': {path} is not a particle file; expected "
                    f"{', '.join(PARTICLE_SUFFIXES)}"]
        if not path.is_file():
            return [f"parameter 'path': file {path} not found"]
        if params.datadir and not Path(params.datadir).is_dir():
            return [f"parameter 'datadir': folder {params.datadir} not found"]
        return []

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        return set_summary(ctx.output("particles"), "particles")

    def preview(self, params: Any) -> dict[str, SetPreview]:
        table = read_checked_table(params.path, params.pixel_size_a, params.datadir,
                                   params.strip_prefix, params.check_stacks)
        # the parsed rows as they are (no item ids yet): no copy of a large table
        return {"particles": SetPreview("particles", set_properties(table), table.particles,
                                        table.optics)}

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        path = str(Path(params.path).resolve())
        stat = Path(path).stat()
        args = {"path": path, "pixel_size_a": params.pixel_size_a, "datadir": params.datadir,
                "strip_prefix": params.strip_prefix, "check_stacks": params.check_stacks,
                "file_identity": [stat.st_size, stat.st_mtime_ns]}
        return Plan(steps=[Step("import", import_particles_step, args, label="import particles")])




def set_properties(table: ParticleTable) -> dict[str, Any]:
    """Set-level properties of an imported particle table."""
    optics, parts = table.optics, table.particles
    pixel_sizes = optics["pixel_size_a"].dropna().unique()
    boxes = optics["box_px"].dropna().unique()

    def single(column: str) -> Any:
        values = optics[column].dropna().unique() if column in optics else []
        return float(values[0]) if len(values) == 1 else None

    has_ctf = "defocus_u_a" in parts and bool(parts["defocus_u_a"].notna().all())
    has_poses = all(c in parts and parts[c].notna().all() for c in ("rot_deg", "tilt_deg",
                                                                    "psi_deg"))
    return {
        "pixel_size_a": float(pixel_sizes[0]) if len(pixel_sizes) == 1 else None,
        "box_px": int(boxes[0]) if len(boxes) == 1 else None,
        "voltage_kv": single("voltage_kv"),
        "cs_mm": single("cs_mm"),
        "amplitude_contrast": single("amplitude_contrast"),
        "has_ctf": has_ctf,
        "has_poses": bool(has_poses),
        "phase_flipped": False,
        "source": str(table.source) if table.source else None,
        "star_layout": table.star_layout(),
    }


def read_checked_table(path: str, pixel_size_a: float | None, datadir: str | None,
                       strip_prefix: str | None, check_stacks: bool) -> ParticleTable:
    """The particle table of ``path`` with its stacks checked (headers only) and pixel sizes."""
    table = read_particles(path, datadir=datadir, strip_prefix=strip_prefix,
                           pixel_size_a=pixel_size_a)
    if not len(table):
        raise InputError(f"{path}: the file lists no particles")
    if check_stacks:
        verify_stacks(table, path)
    require_pixel_sizes(table, path, "pass pixel_size_a")
    return table


def import_particles_step(ctx: StepContext, path: str, pixel_size_a: float | None,
                          datadir: str | None, strip_prefix: str | None, check_stacks: bool,
                          file_identity: list[int]) -> StepResult:
    table = read_checked_table(path, pixel_size_a, datadir, strip_prefix, check_stacks)
    particles = table.particles.copy()
    particles.insert(0, "item_id", np.arange(1, len(particles) + 1, dtype=np.int64))
    ctx.logger.info("imported %d particles from %s", len(particles), path)
    return StepResult(publish={"particles": particles}, optics={"particles": table.optics},
                      properties={"particles": set_properties(table)},
                      info={"particles": len(particles), "optics_groups": len(table.optics)})
