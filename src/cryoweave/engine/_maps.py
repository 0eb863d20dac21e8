"""Map operations: symmetrising to a point group, inverting the hand, threshold masks with a
dilation and a soft edge, and normalisation.

Volumes are ``(N, N, N)`` float32 ``(z, y, x)`` with the centre at index N // 2 on every axis
(RELION/Xmipp). Real-space operations run on NumPy (SciPy's ndimage); they are map-sized, done
once per map, not per particle.
"""

from __future__ import annotations

from typing import Any

import numpy

from ._filters import _raised_cosine
from ._symmetry import symmetry_matrices


def _check_cubic(volume: Any) -> numpy.ndarray:
    array = numpy.asarray(volume)
    if array.ndim != 3 or len(set(array.shape)) != 1:
        raise ValueError(f"volume shape {array.shape}: a cubic map (N, N, N) is required")
    return array


def symmetrize_volume(volume: Any, symmetry: str, *, order: int = 3) -> numpy.ndarray:
    """The average of the map over the group's operators: V_sym(r) = 1/|G| Σ_R V(R·r).

    ``r`` is (x, y, z) from the centre N // 2; operators as :func:`symmetry_matrices` (RELION's
    axes: the n-fold axis along z, d<n>'s 2-fold along x). Interpolation is a spline of
    ``order`` (3: cubic; rotations by multiples of 90° about the axes are exact); outside the
    box counts as 0. Returns float32 ``(N, N, N)``.
    """
    from scipy import ndimage

    array = _check_cubic(volume).astype(numpy.float64)
    n = array.shape[0]
    centre = numpy.full(3, n // 2, dtype=numpy.float64)
    reverse = numpy.eye(3)[::-1]  # (x, y, z) <-> (z, y, x)
    total = numpy.zeros_like(array)
    for matrix in symmetry_matrices(symmetry):
        if numpy.allclose(matrix, numpy.eye(3)):
            total += array
            continue
        index_matrix = reverse @ matrix @ reverse
        # exact 0/±1 entries keep grid-aligned turns on the grid (no spill to the border)
        rounded = numpy.round(index_matrix)
        index_matrix = numpy.where(numpy.abs(index_matrix - rounded) < 1e-9, rounded,
                                   index_matrix)
        total += ndimage.affine_transform(array, index_matrix,
                                          offset=centre - index_matrix @ centre,
                                          order=order, mode="constant", cval=0.0)
    return (total / len(symmetry_matrices(symmetry))).astype(numpy.float32)


def flip_hand(volume: Any) -> numpy.ndarray:
    """The mirror image through the xy plane about the centre: out[z] = in[(2·(N//2) − z) mod N].

    Any mirror inverts the hand; this one keeps the centre voxel and the xy plane through it in
    place (for even N the first plane, which has no mirror partner, stays where it is), so it
    is its own inverse. Returns float32.
    """
    array = _check_cubic(volume)
    n = array.shape[0]
    index = (2 * (n // 2) - numpy.arange(n)) % n
    return numpy.ascontiguousarray(array[index], dtype=numpy.float32)


def threshold_mask(volume: Any, threshold: float, *, dilation_px: float = 0.0,
                   edge_width_px: float = 3.0) -> numpy.ndarray:
    """A soft mask from a map, as ``relion_mask_create``: 1 where the map exceeds
    ``threshold`` and within ``dilation_px`` of such voxels (Euclidean distance), then a
    raised-cosine edge ``(1 + cos(π t))/2`` over ``edge_width_px``, then 0.

    Returns float32 ``(N, N, N)`` in [0, 1]; ValueError when no voxel exceeds the threshold.
    """
    from scipy import ndimage

    array = _check_cubic(volume)
    if dilation_px < 0 or edge_width_px < 0:
        raise ValueError(f"dilation_px={dilation_px} and edge_width_px={edge_width_px} must "
                         "be ≥ 0 (pixels)")
    inside = array > threshold
    if not inside.any():
        raise ValueError(f"threshold={threshold}: no voxel of the map is above it (the map's "
                         f"maximum is {float(array.max()):.4g}); lower the threshold")
    distance = ndimage.distance_transform_edt(~inside)
    mask = _raised_cosine(distance, float(dilation_px), float(edge_width_px), numpy)
    return mask.astype(numpy.float32)


def background_region(box_px: int, radius_px: float | None = None) -> numpy.ndarray:
    """Voxels farther than ``radius_px`` (default N/2) from the centre N // 2: bool (N, N, N)."""
    axis = numpy.arange(box_px, dtype=numpy.float64) - box_px // 2
    z, y, x = numpy.meshgrid(axis, axis, axis, indexing="ij", sparse=True)
    radius = box_px / 2 if radius_px is None else float(radius_px)
    return numpy.sqrt(z * z + y * y + x * x) > radius


def normalize_volume(volume: Any, region: str = "whole", *,
                     background_radius_px: float | None = None) -> numpy.ndarray:
    """(V − mean) / std with the statistics of the whole map (``region="whole"``) or of the
    background, the voxels beyond ``background_radius_px`` (default N/2, the corners outside
    the inscribed sphere) from the centre (``"background"``, as RELION normalises particles).

    Afterwards that region has mean 0 and standard deviation 1. Returns float32.
    """
    array = _check_cubic(volume).astype(numpy.float64)
    if region == "whole":
        values = array
    elif region == "background":
        values = array[background_region(array.shape[0], background_radius_px)]
        if values.size < 2:
            raise ValueError(f"background_radius_px={background_radius_px}: fewer than 2 "
                             "voxels lie beyond it; give a smaller radius")
    else:
        raise ValueError(f"region={region!r}: use 'whole' or 'background'")
    std = float(values.std())
    if std == 0:
        raise ValueError(f"the map's {region} region is constant (std 0); it cannot be "
                         "normalised")
    return ((array - values.mean()) / std).astype(numpy.float32)
