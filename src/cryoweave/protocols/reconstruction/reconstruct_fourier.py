"""ReconstructFourier: half maps, map and FSC from particles with known poses and CTF."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from pydantic import field_validator

from cryoweave.formats import read_volume
from cryoweave.physical import (
    MAX_BATCH_IMAGES,
    MAX_GRIDDING_ITERATIONS,
    REGULARIZATION,
    RESOLUTION_A,
)
from cryoweave.plugin import (
    ADVANCED,
    EXPERT,
    Input,
    ParticleSet,
    Plan,
    PlanContext,
    Protocol,
    ProtocolOutputs,
    ProtocolParams,
    RecordSet,
    Step,
    StepContext,
    StepResult,
    SummaryContext,
    VolumeSet,
    param,
)
from cryoweave.protocols._shared.device import compute_resources, device_info, step_device
from cryoweave.protocols._shared.particle_arrays import (
    arrays_from_frame,
    read_arrays,
    uniform_grid_problem,
    write_arrays,
)
from cryoweave.protocols._shared.reconstruct import (
    curve_record,
    describe_resolution,
    empty_accumulator,
    evaluate,
    half_maps,
    insert_particles,
    load_accumulator,
    save_accumulator,
    write_results,
)
from cryoweave.protocols._shared.summary import reconstruction_summary
from cryoweave.protocols._shared.symmetry import SYMMETRY_NAMES, check_symmetry

ARRAYS = "tmp/particles.npz"


def sums_file(half: int) -> str:
    """A half's back-projection sums in the extra folder (`save_accumulator`)."""
    return f"half{half}_sums.npy"
POSE_COLUMNS = ("rot_deg", "tilt_deg", "psi_deg", "defocus_u_a", "defocus_v_a")


class ReconstructFourier(Protocol):
    """Reconstruct a map from particles with known poses and CTF by Fourier insertion (padding
    ×2, trilinear, CTF-weighted), the two halves kept separate, with symmetry imposed at
    insertion, then — as relion_reconstruct does — iterative gridding weights (10 iterations
    by default), the sinc² gridding correction and a soft mask of the box corners. Reports the
    half-map FSC and the resolution at 0.143 and 0.5 (interpolated and first shell below), and
    writes the maps, the map low-passed at the 0.143 resolution, the FSC plot, central slices
    and projections.
    """

    label = "reconstruct from known poses"

    class Params(ProtocolParams):
        particles: Input[ParticleSet] = param(description="Particles with poses and CTF",
                                              section="Input")
        symmetry: str = param("c1", section="Input",
                              description=f"Symmetry imposed ({SYMMETRY_NAMES})")
        halves: Literal["auto", "random"] = param(
            "auto", section="Halves",
            description="auto: the particles' rlnRandomSubset when every particle has one, "
                        "else a random split; random: always a random split", title="Half sets")
        seed: int = param(0, section="Halves", description="Seed of the random split")
        max_resolution_a: float | None = param(
            None, **RESOLUTION_A.bounds(), unit="Å", section="Input",
            description="Insert Fourier components up to this resolution only",
            title="Maximum resolution")
        mask: Input[VolumeSet] | None = param(None, section="Evaluation",
                                              description="Mask applied before the FSC")
        regularization: float = param(
            1e-3, **REGULARIZATION.bounds(), section="Advanced", expert=EXPERT,
            description="Wiener constant relative to the mean weight")
        gridding_iterations: int = param(
            10, ge=0, le=MAX_GRIDDING_ITERATIONS, section="Advanced", expert=EXPERT,
            description="Iterations of the gridding weights (0: divide data by weights)")
        batch_size: int = param(500, gt=0, le=MAX_BATCH_IMAGES, section="Advanced",
                                expert=ADVANCED,
                                description="Images per insertion batch")

        @field_validator("symmetry")
        @classmethod
        def _symmetry(cls, value: str) -> str:
            return check_symmetry(value)

    class Outputs(ProtocolOutputs):
        volume: VolumeSet
        fsc: RecordSet

    def check_inputs(self, params: Any, inputs: Mapping[str, Any]) -> list[str]:
        particles = inputs.get("particles")
        if particles is None:
            return []
        problems = []
        problem = uniform_grid_problem(particles.optics())
        if problem:
            problems.append(problem)
        if not particles.properties.get("has_poses"):
            problems.append("the particles have no poses (rlnAngleRot/Tilt/Psi); "
                            "ReconstructFourier needs known orientations")
        mask = inputs.get("mask")
        box = particles.properties.get("box_px")
        if mask is not None and box and mask.properties.get("box_px") != box:
            problems.append(f"the mask is {mask.properties.get('box_px')} px but the particles "
                            f"are {box} px; resample the mask")
        return problems

    def summary(self, ctx: SummaryContext) -> dict[str, Any]:
        return reconstruction_summary(ctx)

    def plan(self, params: Any, ctx: PlanContext) -> Plan:
        particles: ParticleSet = ctx.input("particles")
        frame = particles.to_frame(with_extra=False)
        optics = particles.optics()
        problem = uniform_grid_problem(optics)
        if problem:
            raise ValueError(problem)
        arrays = arrays_from_frame(frame, optics,
                                   phase_flipped=bool(particles.properties.get("phase_flipped")),
                                   require=POSE_COLUMNS)
        arrays.columns["half"] = assign_halves(arrays.columns["half"], params.halves,
                                               params.seed)
        write_arrays(ctx.run_dir / ARRAYS, arrays)
        common = {"arrays": str(ctx.run_dir / ARRAYS), "symmetry": params.symmetry,
                  "max_resolution_a": params.max_resolution_a,
                  "batch_size": params.batch_size,
                  # the arrays file is rewritten by every plan: its inputs go into the hash
                  "content": {"particles_set": particles.id,
                              "particles_version": particles.version,
                              "halves": params.halves, "seed": params.seed}}
        steps = [Step(f"insert/half{h}", insert_step, {**common, "half": h},
                      outputs=[f"extra/{sums_file(h)}"], resources=compute_resources(ctx),
                      label=f"back-project half {h}") for h in (1, 2)]
        mask_path = None
        if params.mask is not None:
            mask_path = str(ctx.input("mask").to_frame().iloc[0]["path"])
        steps.append(Step("finalize", finalize_step,
                          {**common, "regularization": params.regularization,
                           "gridding_iterations": params.gridding_iterations,
                           "mask_path": mask_path},
                          outputs=["extra/map.mrc", "extra/fsc.json"],
                          after=["insert/half1", "insert/half2"], label="maps and FSC",
                          resources=compute_resources(ctx)))
        # the halves are independent, one core each most of the time: side by side by default
        return Plan(steps=steps, concurrent_steps=2)


def assign_halves(halves: np.ndarray, mode: str, seed: int) -> np.ndarray:
    """The particles' halves (mode auto, when all are 1 or 2) or a balanced random split."""
    if mode == "auto" and np.isin(halves, (1, 2)).all() and len(np.unique(halves)) == 2:
        return halves.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(halves))
    split = np.ones(len(halves), np.int64)
    split[order[len(halves) // 2:]] = 2
    return split


def insert_step(ctx: StepContext, arrays: str, half: int, symmetry: str,
                max_resolution_a: float | None, batch_size: int,
                content: dict[str, Any]) -> StepResult:
    device = step_device(ctx)
    particles = read_arrays(arrays)
    rows = np.flatnonzero(particles["half"] == half)
    accumulator = empty_accumulator(particles, half=half, padding=2.0,
                                    max_resolution_a=max_resolution_a, device=device)
    insert_particles(accumulator, particles, rows, symmetry=symmetry, batch_size=batch_size,
                     progress=lambda done, total: ctx.progress(done, total), device=device)
    save_accumulator(ctx.extra_dir / sums_file(half), accumulator)
    return StepResult(info=device_info(device, half=half, particles=len(rows)))


def finalize_step(ctx: StepContext, arrays: str, symmetry: str, max_resolution_a: float | None,
                  batch_size: int, content: dict[str, Any], regularization: float,
                  mask_path: str | None, gridding_iterations: int = 10) -> StepResult:
    import pandas as pd

    device = step_device(ctx)
    particles = read_arrays(arrays)
    template = empty_accumulator(particles, half=None, padding=2.0,
                                 max_resolution_a=max_resolution_a)
    paths = [ctx.extra_dir / sums_file(h) for h in (1, 2)]
    with ThreadPoolExecutor(2) as pool:  # file reads release the GIL
        acc1, acc2 = pool.map(lambda path: load_accumulator(path, template, device), paths)
    half1, half2, average = half_maps(acc1, acc2, regularization=regularization,
                                      gridding_iterations=gridding_iterations,
                                      threads=ctx.threads)
    mask = read_volume(mask_path)[0] if mask_path else None
    curve = evaluate(half1, half2, particles.pixel_size_a, mask,
                     max_resolution_a=max_resolution_a)
    files = write_results(ctx.extra_dir, half1, half2, average, particles.pixel_size_a, curve)
    record = curve_record(curve, symmetry=symmetry, particles=len(particles),
                          masked=mask_path is not None)
    ctx.logger.info("resolution (FSC 0.143): %s", describe_resolution(curve, 0.143))
    volume = pd.DataFrame([{"item_id": 1, "path": files["path"],
                            "half1_path": files["half1_path"],
                            "half2_path": files["half2_path"],
                            "pixel_size_a": particles.pixel_size_a, "box_px": particles.box_px,
                            "filtered_path": files["filtered_path"]}])
    fsc_frame = pd.DataFrame([{"item_id": 1, "data": {**record, "files": files}}])
    return StepResult(publish={"volume": volume, "fsc": fsc_frame},
                      properties={"volume": {"pixel_size_a": particles.pixel_size_a,
                                             "box_px": particles.box_px,
                                             "symmetry": symmetry,
                                             "resolution_a": record["resolutions_a"]
                                             ["fsc0143_interpolated"],
                                             "resolution_limited_by":
                                                 record["resolution_limited_by"]["fsc0143"]}},
                      info=device_info(device, **record["resolutions_a"]))
