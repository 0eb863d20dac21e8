"""The outputs of a finished ReconstructHighRes run: maps at the original grid, particles,
pictures, and the optional post-processing script."""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cryoweave.engine import lowpass_filter_a
from cryoweave.errors import CryoweaveError
from cryoweave.formats import read_volume, write_mrc
from cryoweave.plugin import Derived, StepContext, StepResult
from cryoweave.protocols._shared.particle_arrays import ParticleArrays, read_arrays, read_npz
from cryoweave.protocols._shared.reconstruct import (
    empty_accumulator,
    evaluate,
    half_maps,
)
from cryoweave.protocols.highres._halves import (
    fsc_mask,
    insert_normal_images,
    reconstruction_rows,
    resolution_record,
)
from cryoweave.protocols.highres._marginal import marginal_accumulators
from cryoweave.protocols.highres._references import resample_centred
from cryoweave.protocols.highres._schedule import IterationSchedule
from cryoweave.protocols.highres._settings import RefinementSettings, from_json
from cryoweave.protocols.highres._state import (
    iteration_dir,
    read_json,
    with_poses,
    write_json,
)
from cryoweave.protocols.highres._steps import read_schedule
from cryoweave.viewers import (
    plot_angular_distribution,
    plot_fsc,
    plot_resolution_per_iteration,
    plot_volume,
)
from cryoweave.workflow import POST_SCRIPT_ENV, PROJECT_CONFIG, post_script_allowed


def finalize_step(ctx: StepContext, iterations: int, arrays: str,
                  settings: dict[str, Any]) -> StepResult:
    import pandas as pd

    started = time.perf_counter()
    the_settings = from_json(RefinementSettings, settings)
    particles = read_arrays(arrays)
    last = iteration_dir(ctx.extra_dir, iterations)
    record = read_json(last / "result.json")
    pixel, box = particles.pixel_size_a, particles.box_px
    poses = read_npz(last / "poses.npz")
    if record["alignment"] == "stochastic":
        maps = resampled_last_maps(last, pixel, box)  # (a running average: no final insert)
    else:
        maps, record = final_maps(particles, poses, the_settings, read_schedule(last),
                                  progress=lambda done, total: ctx.progress(done, total))
        write_json(ctx.extra_dir / "final_fsc.json", record)
    files: dict[str, str] = {}
    for name in ("half1", "half2", "map"):
        files[name] = str(write_mrc(ctx.extra_dir / f"final_{name}.mrc", maps[name], pixel))
    resolution = record["resolution_0143_a"]
    filtered = lowpass_filter_a(maps["map"], resolution, pixel)
    files["filtered"] = str(write_mrc(ctx.extra_dir / "final_map_filtered.mrc", filtered, pixel))
    records = [read_json(iteration_dir(ctx.extra_dir, i) / "result.json")
               for i in range(1, iterations + 1)]
    plot_fsc({f"iteration {r['iteration']}": (np.asarray(r["frequency_per_a"]),
                                              np.asarray(r["fsc"])) for r in records},
             ctx.extra_dir / "fsc_iterations.png", title="half-map FSC per iteration")
    plot_resolution_per_iteration(records, ctx.extra_dir / "resolution_iterations.png",
                                  title="resolution per iteration")
    used = poses["used"]
    plot_angular_distribution(poses["rot_deg"][used], poses["tilt_deg"][used],
                              ctx.extra_dir / "angular_distribution.png",
                              title=f"angular distribution of {int(used.sum())} particles")
    for mode in ("slices", "projections"):
        plot_volume(maps["map"], pixel, ctx.extra_dir / f"final_{mode}.png",
                    title="refined map", mode=mode)
    if the_settings.post_script:
        run_post_script(the_settings.post_script, files["map"], ctx)
    ids = particles["item_id"][used]
    updates = pd.DataFrame({
        "item_id": ids, "rot_deg": poses["rot_deg"][used], "tilt_deg": poses["tilt_deg"][used],
        "psi_deg": poses["psi_deg"][used], "shift_x_a": poses["shift_x_a"][used],
        "shift_y_a": poses["shift_y_a"][used], "half": poses["half"][used],
        "weight": poses["weight"][used], "score": poses["score"][used],
        "max_cc": poses["score"][used], "cc_percentile": poses["percentile"][used],
        "angular_change_deg": poses["angular_change_deg"][used],
        "cost": 1.0 - poses["score"][used], "defocus_group": poses["defocus_group"][used],
        "defocus_u_a": particles["defocus_u_a"][used] + poses["defocus_change_a"][used],
        "defocus_v_a": particles["defocus_v_a"][used] + poses["defocus_change_a"][used],
        "defocus_change_a": poses["defocus_change_a"][used],
        "gray_scale": poses["gray_scale"][used], "gray_offset": poses["gray_offset"][used],
        "magnification": poses["magnification"][used]})
    volume = pd.DataFrame([{"item_id": 1, "path": files["map"], "half1_path": files["half1"],
                            "half2_path": files["half2"], "pixel_size_a": pixel,
                            "box_px": box, "filtered_path": files["filtered"],
                            "resolution_a": record["resolution_a"],
                            "resolution_0143_a": resolution,
                            "final_weights": record.get("final_weights", "refinement")}])
    rejected = int((~used).sum())
    return StepResult(
        publish={"volume": volume},
        derive={"particles": Derived("particles", updates,
                                     source_set_id=the_settings.particles_set_id)},
        properties={"volume": {"pixel_size_a": pixel, "box_px": box,
                               "symmetry": the_settings.symmetry, "resolution_a": resolution},
                    "particles": {"has_poses": True, "rejected_particles": rejected}},
        info={"iterations": iterations, "resolution_0143_a": resolution, "rejected": rejected,
              "seconds": time.perf_counter() - started})


def resampled_last_maps(last: Path, pixel_size_a: float, box_px: int
                        ) -> dict[str, np.ndarray]:
    """The last iteration's maps brought to the original grid (Fourier padding)."""
    maps = {}
    for name in ("half1", "half2", "map"):
        volume, working_pixel = read_volume(last / f"{name}.mrc")
        full, _ = resample_centred(volume, working_pixel, pixel_size_a, box_px)
        maps[name] = np.asarray(full, np.float32)
    return maps


def final_maps(particles: ParticleArrays, poses: dict[str, np.ndarray],
               settings: RefinementSettings, schedule: IterationSchedule,
               progress: Callable[[int, int], None] | None = None
               ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The final maps, made as ReconstructFourier makes the true-pose map: the original
    images at the refined poses, on the original grid (padding ×2, gridding iterations),
    the particles the last iteration used, abnormal images left out, with unit weights or
    the refinement's (``settings.final_map_weights``).

    The refinement's weights (CC percentile, …) are a rank within defocus groups: on a
    homogeneous set they spread good particles over [w_min, 1], which lowers the effective
    number of particles (measured: benchmarks/highres_map_loss.py). The half-map FSC does
    not see that loss (it favoured the weighted map where the truth did not), so the choice
    is a setting, not automatic. Then, unless ``settings.final_reconstruction`` is best_pose
    or the last iteration held the poses, the maps are made again with each particle
    marginalised over the poses near its own (``_marginal``; ``progress(done, total)``).
    Returns the maps (half1, half2, map at the original box, float32) and the FSC record
    (with ``final_weights`` and ``final_reconstruction``).
    """
    refined = with_poses(particles, poses)
    pixel, box = refined.pixel_size_a, refined.box_px
    radius = schedule.particle_radius_px * schedule.pixel_size_a / pixel
    chosen = settings.final_map_weights
    weights = poses["weight"] if chosen == "refinement" else None
    accumulators, abnormal = [], 0
    for half in (1, 2):
        accumulator = empty_accumulator(refined, half=half, padding=2.0, max_resolution_a=None)
        abnormal += insert_normal_images(accumulator, refined,
                                         reconstruction_rows(poses, half, settings), poses,
                                         settings.symmetry, weights=weights)
        accumulators.append(accumulator)
    half1, half2, average = half_maps(*accumulators, regularization=settings.regularization)
    mask = fsc_mask(settings, box, pixel, radius)
    curve = evaluate(half1, half2, pixel, mask)
    criterion = settings.resolution_criterion
    record = resolution_record(curve, criterion)
    facts: dict[str, Any] = {}
    marginal = marginalised(settings, schedule)
    if marginal:
        soft, facts = marginal_accumulators(
            refined, poses, {h: reconstruction_rows(poses, h, settings) for h in (1, 2)},
            {1: np.asarray(half1), 2: np.asarray(half2)},
            resolution_a=record["resolution_interpolated_a"], symmetry=settings.symmetry,
            weights=weights, progress=progress)
        accumulators = [soft[1], soft[2]]
        half1, half2, average = half_maps(*accumulators,
                                          regularization=settings.regularization)
        facts["hard_resolution_a"] = record["resolution_interpolated_a"]
        record = resolution_record(evaluate(half1, half2, pixel, mask), criterion)
    record.update({
        "final_weights": chosen, "final_reconstruction": "marginal" if marginal else "best_pose",
        "pixel_size_a": pixel, "box_px": box,
        "particles_used": sum(a.n_images for a in accumulators), "abnormal": abnormal,
        **facts})
    maps = {"half1": half1, "half2": half2, "map": average}
    return {k: np.asarray(v, np.float32) for k, v in maps.items()}, record


def marginalised(settings: RefinementSettings, schedule: IterationSchedule) -> bool:
    """Whether the final maps are marginalised: asked for, and the last iteration estimated
    the poses (not ``alignment: none``, not a local iteration with angles and shifts held)."""
    if settings.final_reconstruction != "marginal" or schedule.alignment == "none":
        return False
    return schedule.alignment != "local" or settings.local.angles or settings.local.shifts


def run_post_script(command: str, map_path: str, ctx: StepContext) -> None:
    """Run the user's post-processing command with the final map as its last argument.

    Checked again here (a run continued after the policy changed, or a stored run edited):
    the command runs only where the site or project enables it (the configuration).
    """
    project_root = ctx.run_dir.parent.parent  # <root>/Runs/<run folder>
    if not post_script_allowed(project_root):
        raise CryoweaveError(f"post_script {command!r} is not run: commands from the "
                             f"parameters are disabled; enable them with {POST_SCRIPT_ENV}=1 "
                             f"or 'allow_post_script: true' in {project_root / PROJECT_CONFIG}")
    arguments = [*shlex.split(command), map_path]
    result = subprocess.run(arguments, cwd=ctx.extra_dir, capture_output=True, text=True,
                            timeout=3600)
    (ctx.run_dir / "logs" / "post_script.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise CryoweaveError(f"post_script {command!r} failed (exit {result.returncode}); "
                             f"see {ctx.run_dir / 'logs' / 'post_script.log'}")
