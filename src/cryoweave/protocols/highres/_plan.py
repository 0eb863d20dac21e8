"""The plan of a ReconstructHighRes run: one iteration at a time (``Plan.extend``).

Each iteration is planned from the files of the previous one (its ``result.json``), so a
continued run plans the same steps again and skips the finished ones.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoweave.errors import InputError
from cryoweave.plugin import Plan, PlanContext, Step
from cryoweave.protocols._shared.device import compute_resources
from cryoweave.protocols._shared.particle_arrays import (
    arrays_from_frame,
    read_arrays,
    uniform_grid_problem,
    write_arrays,
    write_npz,
)
from cryoweave.protocols.highres._outputs import finalize_step
from cryoweave.protocols.highres._schedule import (
    alignment_of,
    default_iterations,
    first_lowpass_a,
    parse_floors,
    schedule_iteration,
    starting_resolution_a,
)
from cryoweave.protocols.highres._settings import settings_of, to_json
from cryoweave.protocols.highres._state import (
    completed_iterations,
    initial_poses,
    iteration_dir,
    read_json,
)
from cryoweave.protocols.highres._steps import (
    align_step,
    combine_step,
    evaluate_step,
    insert_step,
    prepare_step,
)
from cryoweave.protocols.reconstruction.reconstruct_fourier import (
    assign_halves,
    sums_file,
)
from cryoweave.protocols.reconstruction.reconstruct_fourier import (
    finalize_step as reconstruct_finalize_step,
)
from cryoweave.protocols.reconstruction.reconstruct_fourier import (
    insert_step as reconstruct_insert_step,
)
from cryoweave.store import ParticleSet, VolumeSet

if TYPE_CHECKING:
    from cryoweave.protocols.highres.protocol import ReconstructHighRes

ARRAYS = "tmp/particles.npz"
CHUNK = 5000  # particles per alignment step (each builds the reference gallery once per half)
CTF_COLUMNS = ("defocus_u_a", "defocus_v_a")


def _single_path(volumes: VolumeSet | None) -> str | None:
    return str(volumes.to_frame().iloc[0]["path"]) if volumes is not None else None


def _starting_resolution(alignment: str, pixel_size_a: float, volumes: VolumeSet,
                         initial_resolution_a: float | None = None) -> float:
    """``initial_resolution_a`` when the user gives it (RELION's --ini_high); else the spec's
    starting resolution (4·Ts0 or Ts0/0.45), never finer than the resolution the starting map
    carries (e.g. a ReconstructFourier map low-passed at 20 Å says 20 Å)."""
    if initial_resolution_a is not None:
        return float(initial_resolution_a)
    start = starting_resolution_a(alignment, pixel_size_a)
    recorded = volumes.properties.get("resolution_a")
    if isinstance(recorded, (int, float)) and math.isfinite(recorded) and recorded > start:
        return float(recorded)
    return start


def _initial_maps(volumes: VolumeSet) -> tuple[list[str], float]:
    frame = volumes.to_frame()
    first = frame.iloc[0]
    if len(frame) == 2:
        maps = [str(frame.iloc[0]["path"]), str(frame.iloc[1]["path"])]
    elif isinstance(first.get("half1_path"), str) and isinstance(first.get("half2_path"), str):
        maps = [first["half1_path"], first["half2_path"]]
    else:
        maps = [str(first["path"])] * 2
    return maps, float(first["pixel_size_a"])


class Refinement:
    """Builds the steps of each iteration; ``extend`` is the plan's continuation."""

    def __init__(self, params: ReconstructHighRes.Params, ctx: PlanContext):
        self.params = params
        self.ctx = ctx
        self.extra = ctx.run_dir / "extra"
        self.arrays_path = str(ctx.run_dir / ARRAYS)
        self.iterations = params.iterations or default_iterations(params.alignment)
        self.floors = parse_floors(params.max_target_resolution_a, self.iterations)
        self.cache_root = str(ctx.project.cache_dir / "downsample")
        self.finalized = False

    # -- the starting point ----------------------------------------------------------------
    def start(self) -> list[Step]:
        params, ctx = self.params, self.ctx
        previous_run = None
        particles: ParticleSet | None = ctx.input("particles")
        if params.continue_from is not None:
            previous_run = ctx.project.get_run(params.continue_from)
            particles = particles or self._previous_output(previous_run, "particles")
        self.particles_set_id = particles.id
        frame = particles.to_frame(with_extra=False)
        optics = particles.optics()
        problem = uniform_grid_problem(optics)
        if problem:
            raise InputError(problem)
        if not params.correct_ctf_envelope:
            frame = frame.assign(ctf_bfactor=0.0)
        arrays = arrays_from_frame(frame, optics, require=CTF_COLUMNS,
                                   phase_flipped=bool(particles.properties.get("phase_flipped")))
        halves = assign_halves(arrays["half"], "auto" if params.split == "fixed" else "random",
                               params.seed)
        arrays.columns["half"] = halves
        write_arrays(self.ctx.run_dir / ARRAYS, arrays)
        poses = initial_poses(arrays, halves)
        self.pixel0, self.box0 = arrays.pixel_size_a, arrays.box_px
        self.radius0 = (params.particle_radius_px if params.particle_radius_px > 0
                        else self.box0 / 2)
        mask = ctx.input("next_mask")
        adhoc = ctx.input("adhoc_mask")
        self.settings = replace(settings_of(params, _single_path(mask), _single_path(adhoc)),
                                particles_set_id=self.particles_set_id)
        steps: list[Step] = []
        if previous_run is not None:
            self.initial = self._from_previous_run(previous_run)
        elif ctx.input("initial_volumes") is not None:
            volumes = ctx.input("initial_volumes")
            maps, pixel = _initial_maps(volumes)
            self.initial = {"maps": maps, "pixel_size_a": pixel, "fsc": None,
                            "resolution_a": _starting_resolution(
                                params.alignment, self.pixel0, volumes,
                                params.initial_resolution_a)}
        else:
            steps = self._initial_reconstruction()
        write_npz(self.extra / "initial_poses.npz", **poses)
        return steps + self.iteration_steps(1)

    def _previous_output(self, run: Any, name: str) -> Any:
        from cryoweave.store import queries, set_handle

        return set_handle(self.ctx.project, queries.output_set_id(self.ctx.project, run.id, name))

    def _from_previous_run(self, run: Any) -> dict[str, Any]:
        folder = self.ctx.project.root / run.folder / "extra"
        last = completed_iterations(folder)
        result = read_json(iteration_dir(folder, last) / "result.json")
        maps = [str(iteration_dir(folder, last) / f"half{h}.mrc") for h in (1, 2)]
        return {"maps": maps, "pixel_size_a": result["pixel_size_a"],
                "fsc": [result["frequency_per_a"], result["fsc"]],
                "resolution_a": result["resolution_a"]}

    def _initial_reconstruction(self) -> list[Step]:
        """A first reference from the particles' own poses (iteration 0)."""
        folder = iteration_dir(self.extra, 0)
        common = {"arrays": self.arrays_path, "symmetry": self.params.symmetry,
                  "max_resolution_a": None, "batch_size": 500, "content": {}}
        relative = folder.relative_to(self.ctx.run_dir)
        steps = [Step(f"iter00/insert/h{h}", initial_insert_step,
                      {**common, "half": h, "folder": str(folder)},
                      outputs=[f"{relative}/{sums_file(h)}"],
                      resources=compute_resources(self.ctx)) for h in (1, 2)]
        steps.append(Step("iter00/reconstruct", initial_maps_step,
                          {**common, "regularization": self.params.regularization,
                           "mask_path": None, "folder": str(folder)},
                          outputs=[f"{relative}/map.mrc"],
                          after=["iter00/insert/h1", "iter00/insert/h2"],
                          resources=compute_resources(self.ctx)))
        self.initial = {"maps": [str(folder / "half1.mrc"), str(folder / "half2.mrc")],
                        "pixel_size_a": self.pixel0, "fsc_file": str(folder / "fsc.json"),
                        "resolution_a": starting_resolution_a(
                            self.params.alignment, self.pixel0,
                            self.params.initial_resolution_a)}
        return steps

    # -- one iteration -----------------------------------------------------------------------
    def _references(self, index: int) -> tuple[dict[str, Any], float]:
        if index == 1:
            references = dict(self.initial)  # (an FSC file is read by the step: it may not
            previous = references.pop("resolution_a")  # exist yet when this is planned)
            initial = None if self.params.continue_from is not None else \
                self.params.initial_resolution_a
            references["lowpass_a"] = first_lowpass_a(
                previous, self.params.resolution_offset_a, self.params.next_lowpass, initial)
        else:
            folder = iteration_dir(self.extra, index - 1)
            result = read_json(folder / "result.json")
            previous = result["resolution_a"]
            references = {"maps": [str(folder / "half1.mrc"), str(folder / "half2.mrc")],
                          "pixel_size_a": result["pixel_size_a"],
                          "fsc": [result["frequency_per_a"], result["fsc"]]}
            references["lowpass_a"] = (previous + self.params.resolution_offset_a
                                       if self.params.next_lowpass else None)
        references["mask"] = self.settings.mask
        return references, previous

    def iteration_steps(self, index: int) -> list[Step]:
        params = self.params
        mode = alignment_of(params.alignment, index)
        references, previous = self._references(index)
        schedule = schedule_iteration(
            index, mode, previous, original_pixel_a=self.pixel0, original_box_px=self.box0,
            floor_a=self.floors[index - 1], offset_a=params.resolution_offset_a,
            multiresolution=params.multiresolution,
            max_shift_percent=params.max_shift_percent)
        schedule = replace(
            schedule, particle_radius_px=self.radius0 * self.pixel0 / schedule.pixel_size_a,
            stochastic_rows=tuple(self._stochastic_rows(index)) if mode == "stochastic" else None)
        n = len(read_arrays(self.arrays_path))
        settings = to_json(replace(self.settings, alignment_now=mode))
        key = f"iter{index:02d}"
        after_previous = [f"iter{index - 1:02d}/evaluate"] if index > 1 else (
            ["iter00/reconstruct"] if "fsc_file" in self.initial else [])
        steps = [Step(f"{key}/prepare", prepare_step,
                      {"iteration": index, "schedule": schedule.to_json(),
                       "arrays": self.arrays_path,
                       "cache_root": self.cache_root, "references": references,
                       "settings": settings},
                      outputs=[f"extra/iter_{index:02d}/schedule.json"], after=after_previous,
                      resources=compute_resources(self.ctx),
                      label=f"iteration {index}: references at {schedule.box_px} px")]
        chunks = 0 if mode == "none" else math.ceil(n / CHUNK)
        align_keys = []
        for chunk in range(chunks):
            align_keys.append(f"{key}/align/c{chunk:03d}")
            steps.append(Step(align_keys[-1], align_step,
                              {"iteration": index, "chunk": chunk, "start": chunk * CHUNK,
                               "stop": min(n, (chunk + 1) * CHUNK),
                               "arrays": self.arrays_path, "settings": settings},
                              outputs=[f"extra/iter_{index:02d}/align_c{chunk:03d}.npz"],
                              after=[f"{key}/prepare"], resources=compute_resources(self.ctx),
                              label=f"iteration {index}: {mode} alignment {chunk + 1}/"
                                    f"{chunks}"))
        steps.append(Step(f"{key}/combine", combine_step,
                          {"iteration": index, "chunks": chunks, "arrays": self.arrays_path,
                           "settings": settings},
                          outputs=[f"extra/iter_{index:02d}/poses.npz"],
                          after=align_keys or [f"{key}/prepare"]))
        for half in (1, 2):
            steps.append(Step(f"{key}/insert/h{half}", insert_step,
                              {"iteration": index, "half": half, "arrays": self.arrays_path,
                               "settings": settings},
                              outputs=[f"extra/iter_{index:02d}/sums_h{half}.npy"],
                              after=[f"{key}/combine"], resources=compute_resources(self.ctx)))
        steps.append(Step(f"{key}/evaluate", evaluate_step,
                          {"iteration": index, "arrays": self.arrays_path,
                           "settings": settings},
                          outputs=[f"extra/iter_{index:02d}/result.json"],
                          after=[f"{key}/insert/h1", f"{key}/insert/h2"],
                          resources=compute_resources(self.ctx)))
        return steps

    def _stochastic_rows(self, index: int) -> list[int]:
        arrays = read_arrays(self.arrays_path)
        rng = np.random.default_rng([self.params.seed, index])
        rows = []
        for half in (1, 2):
            members = np.flatnonzero(arrays["half"] == half)
            count = min(len(members), self.params.stochastic_images_per_half)
            rows.extend(rng.choice(members, count, replace=False).tolist())
        return sorted(int(r) for r in rows)

    # -- continuation --------------------------------------------------------------------------
    def extend(self) -> list[Step]:
        done = completed_iterations(self.extra)
        if done < self.iterations:
            return self.iteration_steps(done + 1)
        if not self.finalized:
            self.finalized = True
            return [Step("finalize", finalize_step,
                         {"iterations": self.iterations, "arrays": self.arrays_path,
                          "settings": to_json(self.settings)},
                         outputs=["extra/final_map.mrc"],
                         after=[f"iter{self.iterations:02d}/evaluate"])]
        return []


def initial_insert_step(ctx: Any, folder: str, **kwargs: Any) -> Any:
    """ReconstructFourier's insertion, into ``folder`` (iteration 0)."""
    result = reconstruct_insert_step(_InFolder(ctx, folder), **kwargs)
    return result


def initial_maps_step(ctx: Any, folder: str, **kwargs: Any) -> Any:
    """ReconstructFourier's maps and FSC, into ``folder``; publishes nothing."""
    maps = reconstruct_finalize_step(_InFolder(ctx, folder), **kwargs)
    from cryoweave.plugin import StepResult

    return StepResult(info={"initial_reference": folder, "device": maps.info.get("device")})


class _InFolder:
    """A StepContext whose extra folder is another folder (iteration 0's)."""

    def __init__(self, ctx: Any, folder: str):
        self._ctx = ctx
        self.extra_dir = Path(folder)
        self.extra_dir.mkdir(parents=True, exist_ok=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)


def plan_refinement(params: ReconstructHighRes.Params, ctx: PlanContext) -> Plan:
    refinement = Refinement(params, ctx)
    return Plan(steps=refinement.start(), extend=refinement.extend)
