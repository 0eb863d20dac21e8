"""The half maps of an iteration and of the final maps: which particles go in, how they are
inserted (abnormal images left out, refined gray values and magnification undone), the FSC mask
and the FSC record. Used by the insert and evaluate steps and by the finalize step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from cryoweave.engine import ReconstructionAccumulator, soft_sphere_mask
from cryoweave.formats import StackReader, read_volume
from cryoweave.protocols._shared.device import to_device
from cryoweave.protocols._shared.particle_arrays import ParticleArrays
from cryoweave.protocols._shared.reconstruct import curve_record
from cryoweave.protocols.highres._references import resample_centred
from cryoweave.protocols.highres._settings import RefinementSettings

ABNORMAL_VARIANCE_FACTOR = 25.0


def reconstruction_rows(poses: dict[str, np.ndarray], half: int, settings: RefinementSettings
                        ) -> np.ndarray:
    """The particles of ``half`` that go into its map: used, weight > 0, tilt in range."""
    selected = (poses["half"] == half) & poses["used"] & (poses["weight"] > 0)
    tilt_range = settings.restrict_tilt_deg
    if tilt_range:
        selected &= (poses["tilt_deg"] >= tilt_range[0]) & (poses["tilt_deg"] <= tilt_range[1])
    return np.flatnonzero(selected)


def normal_batches(particles: ParticleArrays, rows: np.ndarray, poses: dict[str, np.ndarray],
                   counts: list[int] | None = None, batch_size: int = 500
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, images) of ``rows`` in batches, read on the host with refined gray values and
    magnification undone, abnormal images (non-finite, or variance beyond ×/÷
    ABNORMAL_VARIANCE_FACTOR of the first batch's median) left out; ``counts`` (if given)
    gets ``[abnormal so far, rows done so far]``."""
    reader = StackReader()
    reference_variance = None
    if counts is not None:
        counts[:] = [0, 0]
    for begin in range(0, len(rows), batch_size):
        batch = rows[begin:begin + batch_size]
        images = reader.read(particles.paths[batch], particles["image_index"][batch],
                             particles.box_px)
        variance = images.reshape(len(batch), -1).var(axis=1)
        if reference_variance is None:
            reference_variance = float(np.median(variance[np.isfinite(variance)])) or 1.0
        normal = (np.isfinite(images).all(axis=(1, 2))
                  & (variance < ABNORMAL_VARIANCE_FACTOR * reference_variance)
                  & (variance > reference_variance / ABNORMAL_VARIANCE_FACTOR))
        if counts is not None:
            counts[0] += int((~normal).sum())
            counts[1] = begin + len(batch)
        batch, images = batch[normal], images[normal]
        yield batch, corrected_images(images, poses, batch)


def insert_normal_images(accumulator: ReconstructionAccumulator, particles: ParticleArrays,
                         rows: np.ndarray, poses: dict[str, np.ndarray], symmetry: str, *,
                         weights: np.ndarray | None, device: str = "cpu",
                         progress: Callable[[int, int], None] | None = None) -> int:
    """Insert the particles ``rows`` (``normal_batches``: abnormal images left out, refined
    gray values and magnification undone); returns how many were left out. ``weights`` None:
    unit weights. Images are read, screened and corrected on the host and inserted on
    ``device``."""
    counts: list[int] = []
    for batch, images in normal_batches(particles, rows, poses, counts):
        if len(batch):
            accumulator.insert(
                to_device(images, device), to_device(particles.matrices(batch), device),
                ctf=to_device(particles.ctf(batch), device),
                origin_xy_px=to_device(particles.origins_px(batch), device), symmetry=symmetry,
                particle_weights=None if weights is None else to_device(weights[batch], device))
        if progress is not None:
            progress(counts[1], len(rows))
    return counts[0] if counts else 0


def corrected_images(images: np.ndarray, poses: dict[str, np.ndarray], rows: np.ndarray
                     ) -> np.ndarray:
    """Images with refined gray values removed and magnification undone."""
    from cryoweave.protocols.highres._local_extras import magnify

    scale = poses["gray_scale"][rows]
    if not (np.all(scale == 1) and np.all(poses["gray_offset"][rows] == 0)):
        images = (images - poses["gray_offset"][rows][:, None, None].astype(np.float32)) \
            / scale[:, None, None].astype(np.float32)
    magnification = poses["magnification"][rows]
    if not np.all(magnification == 1):
        images = magnify(images.astype(np.float32), 1 / magnification)
    return images


def fsc_mask(settings: RefinementSettings, box_px: int, pixel_size_a: float,
             particle_radius_px: float) -> np.ndarray:
    """The mask of the half-map FSC: the ad-hoc mask resampled, else a soft sphere 3 px
    beyond the particle radius (px at ``pixel_size_a``)."""
    if settings.adhoc_mask:
        mask_volume, mask_pixel = read_volume(settings.adhoc_mask)
        mask, _ = resample_centred(mask_volume, mask_pixel, pixel_size_a, box_px)
        return np.clip(np.asarray(mask), 0, 1)
    return soft_sphere_mask(box_px, min(particle_radius_px + 3, box_px / 2 - 2),
                            edge_width_px=3.0, ndim=3)

def resolution_record(curve: Any, criterion: float) -> dict[str, Any]:
    """The FSC record of a refinement map: the curve, the resolution at ``criterion`` (first
    shell below it, and interpolated), at 0.143, and what bounds each (filter, Nyquist)."""
    record = curve_record(curve)
    record.update({
        "resolution_a": curve.resolution_a(criterion, method="first_below"),
        "resolution_criterion": criterion,
        "resolution_interpolated_a": curve.resolution_a(criterion),
        "resolution_0143_a": curve.resolution_a(0.143),
        "resolution_limited_by": {"criterion": curve.limited_by(criterion,
                                                                method="first_below"),
                                  "fsc0143": curve.limited_by(0.143)}})
    return record
