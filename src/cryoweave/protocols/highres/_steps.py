"""The steps of one ReconstructHighRes iteration; they talk only through files (``_state``)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cryoweave.engine import euler_to_matrix, soft_sphere_mask
from cryoweave.formats import ParticleTable, StackReader, read_volume, write_mrc
from cryoweave.plugin import StepContext, StepResult
from cryoweave.protocols._shared.device import device_info, step_device, to_device, to_host
from cryoweave.protocols._shared.particle_arrays import (
    ParticleArrays,
    read_arrays,
    read_npz,
    write_npz,
)
from cryoweave.protocols._shared.reconstruct import (
    describe_resolution,
    empty_accumulator,
    evaluate,
    load_accumulator,
    save_accumulator,
)
from cryoweave.protocols.downsample import (
    DownsampleCache,
    cache_key,
    downsample_stack,
    stack_name,
)
from cryoweave.protocols.highres._alignment import assign
from cryoweave.protocols.highres._halves import (
    fsc_mask,
    insert_normal_images,
    reconstruction_rows,
    resolution_record,
)
from cryoweave.protocols.highres._references import (
    POSITIVITY_MAX_NEGATIVE_MASS,
    ReferenceOptions,
    positivity_record,
    prepare_reference,
    resample_centred,
)
from cryoweave.protocols.highres._schedule import IterationSchedule
from cryoweave.protocols.highres._settings import (
    LocalSettings,
    RefinementSettings,
    from_json,
    to_json,
)
from cryoweave.protocols.highres._state import (
    centre_offset_px,
    initial_poses,
    iteration_dir,
    on_working_grid,
    read_json,
    with_poses,
    write_json,
)
from cryoweave.protocols.highres._weights import angular_changes_deg, compute_weights

if TYPE_CHECKING:  # loads on first use: light commands do not need it
    pass


# -- helpers -----------------------------------------------------------------------------------
def previous_poses(extra: Path, iteration: int, arrays: ParticleArrays) -> dict[str, np.ndarray]:
    if iteration > 1:
        return read_npz(iteration_dir(extra, iteration - 1) / "poses.npz")
    initial = extra / "initial_poses.npz"
    return read_npz(initial) if initial.exists() else initial_poses(arrays, arrays["half"])


def working_particles(arrays: ParticleArrays, schedule: IterationSchedule) -> ParticleArrays:
    if schedule.stack:
        return on_working_grid(arrays, schedule.stack, schedule.box_px, schedule.pixel_size_a)
    return arrays


def read_schedule(folder: Path) -> IterationSchedule:
    """The iteration's schedule as its prepare step wrote it (with the working stack)."""
    return IterationSchedule.from_json(read_json(folder / "schedule.json"))


def particle_mask(box_px: int, radius_px: float) -> np.ndarray:
    return soft_sphere_mask(box_px, min(radius_px, box_px / 2 - 1), edge_width_px=3.0, ndim=2)


# -- prepare: working grid and references --------------------------------------------------------
def prepare_step(ctx: StepContext, iteration: int, schedule: dict[str, Any], arrays: str,
                 cache_root: str, references: dict[str, Any],
                 settings: dict[str, Any]) -> StepResult:
    import pandas as pd

    started = time.perf_counter()
    the_schedule = IterationSchedule.from_json(schedule)
    the_settings = from_json(RefinementSettings, settings)
    device = step_device(ctx)
    particles = read_arrays(arrays)
    folder = iteration_dir(ctx.extra_dir, iteration)
    box = the_schedule.box_px
    if box != particles.box_px:
        table = ParticleTable(pd.DataFrame({"image_path": particles.paths,
                                            "image_index": particles["image_index"],
                                            "optics_group": particles["optics_group"]}),
                              particles.optics.assign(name="g"))
        key = cache_key(table, box)

        def build(target: Path) -> dict:
            stats = downsample_stack(table, box, target, the_schedule.pixel_size_a,
                                     threads=ctx.threads, device=device)
            return {"n_images": stats.n_images, "box_px": box}

        entry = DownsampleCache(Path(cache_root)).get_or_build(key, stack_name(box), build)
        the_schedule = replace(the_schedule, stack=str(entry.stack_path))
    options = ReferenceOptions(**to_json(the_settings.reference))
    user_mask = read_volume(references["mask"])[0] if references.get("mask") else None
    previous_fsc = None
    if references.get("fsc_file"):
        record = read_json(Path(references["fsc_file"]))
        previous_fsc = (np.asarray(record["frequency_per_a"]), np.asarray(record["fsc"]))
    elif references.get("fsc"):
        previous_fsc = (np.asarray(references["fsc"][0]), np.asarray(references["fsc"][1]))
    positivity = {}
    for half in (1, 2):
        volume, pixel = read_volume(references["maps"][half - 1])
        pixel = references.get("pixel_size_a") or pixel
        rng = np.random.default_rng([the_settings.seed, iteration, half])
        reference, negative_mass = prepare_reference(
            to_device(volume, device), pixel, box_px=box,
            working_pixel_a=the_schedule.pixel_size_a,
            lowpass_resolution_a=references.get("lowpass_a"), previous_fsc=previous_fsc,
            options=options, user_mask=user_mask, rng=rng)
        write_mrc(folder / f"ref_h{half}.mrc", to_host(reference), the_schedule.pixel_size_a)
        if negative_mass is not None:
            positivity[f"h{half}"] = positivity_record(negative_mass)
            if not positivity[f"h{half}"]["applied"]:
                ctx.logger.info(
                    "iteration %d, half %d: positivity not applied: %.0f %% of the reference's "
                    "mass is negative (a non-negative density has under %.0f %%)", iteration,
                    half, 100 * negative_mass, 100 * POSITIVITY_MAX_NEGATIVE_MASS)
    seconds = time.perf_counter() - started
    write_json(folder / "reference.json", {"positivity": positivity})
    write_json(folder / "schedule.json", replace(the_schedule, seconds=seconds).to_json())
    return StepResult(info=device_info(device, box_px=box,
                                       pixel_size_a=the_schedule.pixel_size_a))


# -- align -------------------------------------------------------------------------------------
def align_step(ctx: StepContext, iteration: int, chunk: int, start: int, stop: int,
               arrays: str, settings: dict[str, Any]) -> StepResult:
    started = time.perf_counter()
    the_settings = from_json(RefinementSettings, settings)
    device = step_device(ctx)
    folder = iteration_dir(ctx.extra_dir, iteration)
    schedule = read_schedule(folder)
    master = read_arrays(arrays)
    poses = previous_poses(ctx.extra_dir, iteration, master)
    halves = poses["half"]
    particles = working_particles(with_poses(master, poses), schedule)
    box, pixel = schedule.box_px, schedule.pixel_size_a
    # (working origins include the crop's centre offset; poses keep the original frame)
    offset_px = centre_offset_px(master.box_px, box) if schedule.stack else 0.0
    rows = np.arange(start, stop)
    if the_settings.alignment == "stochastic":
        rows = rows[np.isin(rows, np.asarray(schedule.stochastic_rows))]
    reader = StackReader()
    mask = particle_mask(box, schedule.particle_radius_px * (1 + the_settings.max_shift_percent
                                                               / 100))
    mask_on_device = to_device(mask, device)
    out = {name: np.full(len(rows), np.nan) for name in
           ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "score")}
    local = the_settings.local if the_settings.alignment_now == "local" else None
    for name in ("defocus_change_a", "gray_scale", "gray_offset", "magnification"):
        out[name] = np.asarray(poses[name][rows], np.float64).copy()
    for half in (1, 2):
        members = np.flatnonzero(halves[rows] == half)
        if not len(members):
            continue
        selected = rows[members]
        unmasked = reader.read(particles.paths[selected], particles["image_index"][selected],
                               box)
        images = to_device(unmasked, device) * mask_on_device
        reference, _ = read_volume(folder / f"ref_h{half}.mrc")
        result = assign(the_settings.alignment_now, images,
                        to_device(particles.ctf(selected), device), to_device(reference, device),
                        schedule, the_settings, current=particles, rows=selected)
        del images
        out["rot_deg"][members] = result.rot_deg
        out["tilt_deg"][members] = result.tilt_deg
        out["psi_deg"][members] = result.psi_deg
        out["shift_x_a"][members] = (result.origin_x_px - offset_px) * pixel
        out["shift_y_a"][members] = (result.origin_y_px - offset_px) * pixel
        out["score"][members] = result.score
        if local is not None and (local.scale or local.defocus or local.gray):
            refine_extras(out, members, unmasked, particles, selected, reference, result, local,
                          schedule, mask)
        ctx.progress(int(members[-1]) + 1, len(rows))
    write_npz(folder / f"align_c{chunk:03d}.npz", rows=rows,
              seconds=np.asarray(time.perf_counter() - started), **out)
    return StepResult(info=device_info(device, particles=len(rows)))


def refine_extras(out: dict[str, np.ndarray], members: np.ndarray, unmasked: np.ndarray,
                  particles: ParticleArrays, selected: np.ndarray, reference: np.ndarray,
                  result: Any, local: LocalSettings, schedule: IterationSchedule,
                  mask: np.ndarray) -> None:
    """Magnification, then defocus, then gray values, at the refined poses (local iterations).

    Magnification goes first: its error moves the CTF rings like a defocus change. Defocus is
    refined on unmasked images (the particle mask cuts the signal the CTF delocalises beyond
    it and biases the defocus) with the magnification undone.
    """
    from cryoweave.engine import local_search
    from cryoweave.protocols.highres._alignment import matching_radius_px
    from cryoweave.protocols.highres._local_extras import fit_gray, magnify, refine_scale

    r_max = matching_radius_px(schedule)
    poses = {"rot_deg": result.rot_deg, "tilt_deg": result.tilt_deg, "psi_deg": result.psi_deg,
             "origin_x_px": result.origin_x_px, "origin_y_px": result.origin_y_px}
    images = unmasked
    if local.scale:
        scale, score = refine_scale(unmasked, particles.ctf(selected), reference, poses,
                                    max_change=local.max_scale_change, r_max_px=r_max)
        out["magnification"][members] = scale
        out["score"][members] = np.maximum(out["score"][members], score)
        images = magnify(unmasked, 1 / scale)
    offsets = None
    if local.defocus:
        refined = local_search(
            images, particles.ctf(selected), reference, **poses, max_angle_change_deg=0.0,
            max_shift_change_px=0.0, angular_step_deg=schedule.angular_step_deg,
            r_max_px=r_max, refine_defocus=True,
            max_defocus_change_a=local.max_defocus_change_a,
            ctf_for=lambda index, change: particles.ctf(selected[np.asarray(index)],
                                                        defocus_offset_a=np.asarray(change)))
        offsets = refined.defocus_change_a
        out["defocus_change_a"][members] += offsets
        out["score"][members] = np.maximum(out["score"][members], refined.score)
    if local.gray:
        ctfs = particles.ctf(selected, defocus_offset_a=offsets)
        a, b = fit_gray(images * mask, ctfs, reference, poses, mask,
                        max_scale_change=local.max_gray_scale_change,
                        max_offset_sigma=local.max_gray_offset_sigma)
        out["gray_scale"][members] = a
        out["gray_offset"][members] = b


# -- combine: poses and weights ----------------------------------------------------------------
def combine_step(ctx: StepContext, iteration: int, chunks: int, arrays: str,
                 settings: dict[str, Any]) -> StepResult:
    the_settings = from_json(RefinementSettings, settings)
    folder = iteration_dir(ctx.extra_dir, iteration)
    schedule = read_schedule(folder)
    master = read_arrays(arrays)
    before = previous_poses(ctx.extra_dir, iteration, master)
    poses = {k: np.array(v, copy=True) for k, v in before.items()}
    align_seconds = 0.0
    aligned = np.zeros(len(master), bool)
    for chunk in range(chunks):
        part = read_npz(folder / f"align_c{chunk:03d}.npz")
        rows = part["rows"]
        align_seconds += float(part["seconds"])
        for name in ("rot_deg", "tilt_deg", "psi_deg", "shift_x_a", "shift_y_a", "score",
                     "defocus_change_a", "gray_scale", "gray_offset", "magnification"):
            if name in part:
                poses[name][rows] = part[name]
        aligned[rows] = True
    if chunks == 0:  # alignment none: poses, scores and weights stay as they were
        write_npz(folder / "poses.npz", **poses)
        write_json(folder / "align_stats.json", {"align_seconds": 0.0, "aligned": 0,
                                                 "rejected_alignment": 0})
        return StepResult(info={"rejected": 0})
    previous = euler_to_matrix(before["rot_deg"], before["tilt_deg"], before["psi_deg"])
    current = euler_to_matrix(poses["rot_deg"], poses["tilt_deg"], poses["psi_deg"])
    poses["angular_change_deg"] = angular_changes_deg(previous, current, the_settings.symmetry)
    finite = np.isfinite(poses["score"])
    rejected = ~finite | (the_settings.alignment_now == "local") & (poses["score"] < 0)
    if the_settings.alignment_now == "stochastic":
        rejected |= ~aligned  # only this iteration's subset is reconstructed
    terms = compute_weights(np.where(finite, poses["score"], 0.0), master["defocus_u_a"],
                            the_settings.weights,
                            angular_change_deg=poses["angular_change_deg"],
                            angular_step_deg=schedule.angular_step_deg)
    poses["weight"] = np.where(rejected, 0.0, terms["weight"])
    poses["percentile"] = terms["percentile"]
    poses["defocus_group"] = terms["defocus_group"]
    poses["used"] = ~rejected
    write_npz(folder / "poses.npz", **poses)
    write_json(folder / "align_stats.json", {"align_seconds": align_seconds,
                                             "aligned": int(aligned.sum()),
                                             "rejected_alignment": int(rejected.sum())})
    return StepResult(info={"rejected": int(rejected.sum())})


# -- insert: weighted reconstruction of one half -----------------------------------------------
def insert_step(ctx: StepContext, iteration: int, half: int, arrays: str,
                settings: dict[str, Any]) -> StepResult:
    started = time.perf_counter()
    the_settings = from_json(RefinementSettings, settings)
    device = step_device(ctx)
    folder = iteration_dir(ctx.extra_dir, iteration)
    schedule = read_schedule(folder)
    poses = read_npz(folder / "poses.npz")
    particles = working_particles(with_poses(read_arrays(arrays), poses), schedule)
    rows = reconstruction_rows(poses, half, the_settings)
    accumulator = empty_accumulator(particles, half=half, padding=2.0, max_resolution_a=None,
                                    device=device)
    abnormal = insert_normal_images(accumulator, particles, rows, poses, the_settings.symmetry,
                                    weights=poses["weight"], device=device,
                                    progress=lambda done, total: ctx.progress(done, total))
    save_accumulator(folder / f"sums_h{half}.npy", accumulator)
    write_json(folder / f"insert_h{half}.json", {"inserted": accumulator.n_images,
                                                 "abnormal": abnormal,
                                                 "seconds": time.perf_counter() - started})
    return StepResult(info=device_info(device, inserted=accumulator.n_images,
                                       abnormal=abnormal))


# -- evaluate: maps, FSC, resolution, the iteration's record -----------------------------------
def evaluate_step(ctx: StepContext, iteration: int, arrays: str,
                  settings: dict[str, Any]) -> StepResult:
    import pandas as pd

    from cryoweave.protocols._shared.reconstruct import half_maps

    started = time.perf_counter()
    the_settings = from_json(RefinementSettings, settings)
    device = step_device(ctx)
    folder = iteration_dir(ctx.extra_dir, iteration)
    schedule = read_schedule(folder)
    particles = working_particles(read_arrays(arrays), schedule)
    box, pixel = schedule.box_px, schedule.pixel_size_a
    template = empty_accumulator(particles, half=None, padding=2.0, max_resolution_a=None)
    acc1 = load_accumulator(folder / "sums_h1.npy", template, device)
    acc2 = load_accumulator(folder / "sums_h2.npy", template, device)
    half1, half2, average = half_maps(acc1, acc2, regularization=the_settings.regularization)
    if the_settings.alignment_now == "stochastic" and iteration > 1:
        alpha = the_settings.stochastic_alpha
        previous = iteration_dir(ctx.extra_dir, iteration - 1)
        mixed = []
        for name, new in (("half1", half1), ("half2", half2), ("map", average)):
            old, old_pixel = read_volume(previous / f"{name}.mrc")
            old, _ = resample_centred(to_device(old, device), old_pixel, pixel, box)
            mixed.append((1 - alpha) * old + alpha * new)
        half1, half2, average = mixed
    mask = fsc_mask(the_settings, box, pixel, schedule.particle_radius_px)
    curve = evaluate(half1, half2, pixel, mask)
    for name, volume in (("half1", half1), ("half2", half2), ("map", average)):
        write_mrc(folder / f"{name}.mrc", to_host(volume), pixel)
    poses = read_npz(folder / "poses.npz")
    align = read_json(folder / "align_stats.json")
    inserts = [read_json(folder / f"insert_h{h}.json") for h in (1, 2)]
    references = folder / "reference.json"  # absent in iterations prepared before it existed
    changes = poses["angular_change_deg"][poses["used"]]
    criterion = the_settings.resolution_criterion
    record = resolution_record(curve, criterion)
    record.update({
        "iteration": iteration, "alignment": the_settings.alignment_now,
        "pixel_size_a": pixel, "box_px": box,
        "angular_step_deg": schedule.angular_step_deg,
        "previous_resolution_a": schedule.previous_resolution_a,
        "target_resolution_a": schedule.target_resolution_a,
        "particles_used": int(sum(i["inserted"] for i in inserts)),
        "particles_rejected": int((~poses["used"]).sum() + sum(i["abnormal"] for i in inserts)),
        "reference_positivity": read_json(references)["positivity"] if references.exists()
        else {},
        "angular_change_deg": {"median": float(np.median(changes)) if len(changes) else 0.0,
                               "mean": float(np.mean(changes)) if len(changes) else 0.0,
                               "p90": float(np.percentile(changes, 90)) if len(changes) else 0.0},
        "seconds": {"prepare": schedule.seconds or 0.0,
                    "assignment": align["align_seconds"],
                    "reconstruction": sum(i["seconds"] for i in inserts)
                    + (time.perf_counter() - started)},
    })
    write_json(folder / "result.json", record)  # last: the iteration is complete
    ctx.logger.info("iteration %d: %.2f Å at FSC %.3g (0.143: %s), %d particles",
                    iteration, record["resolution_a"], criterion,
                    describe_resolution(curve, 0.143), record["particles_used"])
    return StepResult(publish={"fsc": pd.DataFrame([{"item_id": iteration, "data": record}])},
                      info=device_info(device, resolution_a=record["resolution_a"]))
