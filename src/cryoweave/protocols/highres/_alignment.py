"""Angular assignment for one batch of particles: global, local or none (engine adapters)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cryoweave.protocols._shared.particle_arrays import ParticleArrays

if TYPE_CHECKING:
    from cryoweave.protocols.highres._schedule import IterationSchedule
    from cryoweave.protocols.highres._settings import RefinementSettings


@dataclass
class Assignment:
    rot_deg: np.ndarray
    tilt_deg: np.ndarray
    psi_deg: np.ndarray
    origin_x_px: np.ndarray
    origin_y_px: np.ndarray
    score: np.ndarray


def matching_radius_px(schedule: IterationSchedule) -> float:
    """Fourier radius (px) of the resolution used for matching: the previous resolution."""
    radius = schedule.box_px * schedule.pixel_size_a / schedule.previous_resolution_a
    return float(min(radius, schedule.box_px // 2 - 1))


def assign(mode: str, images: np.ndarray, ctfs: np.ndarray, reference: np.ndarray,
           schedule: IterationSchedule, settings: RefinementSettings, *, current: ParticleArrays,
           rows: np.ndarray) -> Assignment:
    """Poses of ``images`` (the particles ``rows`` of ``current``) against ``reference``."""
    from cryoweave.engine import array_namespace, global_search, local_search, to_device

    # the priors go where the images are (they come from the host tables)
    device = "cpu" if array_namespace(images) is np else "gpu"
    origins = to_device(current.origins_px(rows), device)  # at the working pixel size
    r_max = matching_radius_px(schedule)
    if mode in ("global", "stochastic"):
        result = global_search(images, ctfs, reference,
                               angular_step_deg=schedule.angular_step_deg,
                               symmetry=settings.symmetry,
                               min_tilt_deg=settings.min_tilt_deg,
                               max_tilt_deg=settings.max_tilt_deg,
                               max_shift_px=schedule.max_shift_px, r_max_px=r_max)
    elif mode == "local":
        local = settings.local
        result = local_search(
            images, ctfs, reference, rot_deg=to_device(current["rot_deg"][rows], device),
            tilt_deg=to_device(current["tilt_deg"][rows], device),
            psi_deg=to_device(current["psi_deg"][rows], device),
            origin_x_px=origins[:, 0], origin_y_px=origins[:, 1],
            max_angle_change_deg=(schedule.local_max_angle_deg if local.angles else 0.0),
            max_shift_change_px=(local.max_shift_percent / 100 * schedule.box_px
                                 if local.shifts else 0.0),
            angular_step_deg=schedule.angular_step_deg, r_max_px=r_max)
    else:
        raise ValueError(f"no angular assignment for alignment={mode!r}")
    return Assignment(np.asarray(result.rot_deg), np.asarray(result.tilt_deg),
                      np.asarray(result.psi_deg), np.asarray(result.origin_x_px),
                      np.asarray(result.origin_y_px), np.asarray(result.score))
