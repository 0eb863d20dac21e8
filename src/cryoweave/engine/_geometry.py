"""Euler angles, rotation matrices and image shifts (RELION / Xmipp conventions).

Euler angles are ZYZ (rot, tilt, psi) in degrees. The matrix of an orientation is

    A = Rz(psi) · Ry(tilt) · Rz(rot),   Rz(t) = [[c, s, 0], [−s, c, 0], [0, 0, 1]],
                                         Ry(t) = [[c, 0, −s], [0, 1, 0], [s, 0, c]]

(passive rotations, RELION's `Euler_angles2matrix`). A projection is
P(x, y) = ∫ V(Aᵀ (x, y, z)) dz, so the 2-D frequency (fx, fy) samples the volume transform at
Aᵀ (fx, fy, 0); the projection direction is A's third row
(cos rot · sin tilt, sin rot · sin tilt, cos tilt).

Shifts: `shift_phase` is the Fourier factor that translates an image by (+x, +y) pixels, i.e.
g(x, y) = f(x − shift_x, y − shift_y). RELION's rlnOriginX/Y (pixels; rlnOriginX/YAngst / pixel
size in RELION 3.1) is the translation to apply to a particle image to centre it, so a particle
equals its centred projection translated by −origin, and it is compared with (or inserted as) a
projection after translating it by +origin.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace
from ._fft import fft_wave_numbers


def _as_float64(xp: ModuleType, *values: Any) -> list[Any]:
    return [xp.asarray(v, dtype=xp.float64) for v in values]


def _namespace_of(*values: Any) -> ModuleType:
    """Namespace of the array arguments; scalars and lists count as NumPy."""
    arrays = [v for v in values if type(v).__module__.split(".")[0] in ("numpy", "cupy")]
    return array_namespace(*arrays) if arrays else numpy


def euler_to_matrix(rot_deg: Any, tilt_deg: Any, psi_deg: Any) -> Any:
    """Rotation matrices A = Rz(psi)·Ry(tilt)·Rz(rot) (passive, RELION/Xmipp) from ZYZ angles.

    rot_deg, tilt_deg, psi_deg: broadcastable arrays (or scalars) of angles in degrees.
    Returns `(..., 3, 3)` float64 on the inputs' backend (NumPy for plain scalars).
    """
    xp = _namespace_of(rot_deg, tilt_deg, psi_deg)
    rot, tilt, psi = xp.broadcast_arrays(*_as_float64(xp, rot_deg, tilt_deg, psi_deg))
    ca, sa = xp.cos(xp.deg2rad(rot)), xp.sin(xp.deg2rad(rot))
    cb, sb = xp.cos(xp.deg2rad(tilt)), xp.sin(xp.deg2rad(tilt))
    cg, sg = xp.cos(xp.deg2rad(psi)), xp.sin(xp.deg2rad(psi))
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    rows = [
        [cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
        [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
        [sc, ss, cb],
    ]
    return xp.stack([xp.stack(row, axis=-1) for row in rows], axis=-2)


def matrix_to_euler(matrices: Any) -> tuple[Any, Any, Any]:
    """ZYZ angles (rot, tilt, psi) in degrees of rotation matrices `(..., 3, 3)`.

    Inverse of `euler_to_matrix`: tilt in [0, 180], rot and psi in (−180, 180]. At the gimbal
    lock (tilt = 0 or 180, where only rot ± psi is defined) rot is set to 0 and psi carries the
    whole in-plane angle, as in RELION's `Euler_matrix2angles`. Returns float64 arrays of shape
    `...`.
    """
    xp = array_namespace(matrices)
    a = xp.asarray(matrices, dtype=xp.float64)
    if a.shape[-2:] != (3, 3):
        raise ValueError(f"matrices must have shape (..., 3, 3); got {tuple(a.shape)}")
    sin_tilt = xp.sqrt(a[..., 0, 2] ** 2 + a[..., 1, 2] ** 2)
    tilt = xp.arctan2(sin_tilt, a[..., 2, 2])
    regular = sin_tilt > 1e-12  # below: a gimbal lock to float64 precision
    rot = xp.where(regular, xp.arctan2(a[..., 2, 1], a[..., 2, 0]), 0.0)
    psi_regular = xp.arctan2(a[..., 1, 2], -a[..., 0, 2])
    # tilt ≈ 0: A ≈ Rz(psi + rot); tilt ≈ 180: A ≈ Rz(psi − rot)·Ry(180)
    psi_lock = xp.where(
        a[..., 2, 2] > 0,
        xp.arctan2(-a[..., 1, 0], a[..., 0, 0]),
        xp.arctan2(a[..., 1, 0], -a[..., 0, 0]),
    )
    tilt = xp.where(regular, tilt, xp.where(a[..., 2, 2] > 0, 0.0, numpy.pi))
    psi = xp.where(regular, psi_regular, psi_lock)
    return xp.rad2deg(rot), xp.rad2deg(tilt), xp.rad2deg(psi)


def projection_direction(matrices: Any) -> Any:
    """Projection directions (unit vectors, `(..., 3)`) of orientations: the third row of A."""
    return matrices[..., 2, :]


def rotation_angle_deg(matrices_1: Any, matrices_2: Any) -> Any:
    """Angle (degrees, [0, 180]) of the rotation taking orientation A1 to A2, i.e. of A1·A2ᵀ.

    Inputs `(..., 3, 3)`, broadcast against each other; returns float64 `...`.
    """
    xp = array_namespace(matrices_1, matrices_2)
    trace = xp.sum(matrices_1 * matrices_2, axis=(-2, -1))  # trace(A1 · A2ᵀ)
    return xp.rad2deg(xp.arccos(xp.clip((trace - 1.0) / 2.0, -1.0, 1.0)))


def _wave_numbers(box_px: int, half: bool, xp: ModuleType) -> tuple[Any, Any]:
    """Signed wave numbers (cycles per box) of the y and x FFT axes (conventions: i ≤ N/2 → i)."""
    full = fft_wave_numbers(box_px, xp)
    kx = fft_wave_numbers(box_px, xp, rfft=True) if half else full
    return full, kx


def shift_phase(
    box_px: int,
    shift_x_px: Any,
    shift_y_px: Any,
    *,
    rfft: bool = True,
    dtype: Any = numpy.complex64,
    xp: ModuleType | None = None,
) -> Any:
    """Fourier factors that translate images by (+shift_x_px, +shift_y_px) pixels.

    Multiplying `rfft2(image)` by the result and transforming back gives
    g(x, y) = f(x − shift_x, y − shift_y) (periodic; sub-pixel shifts are band-limited).
    To centre a RELION particle, shift it by (+rlnOriginX, +rlnOriginY) pixels.

    box_px: square image size N (odd or even). shift_x_px, shift_y_px: scalars or `(n,)` arrays.
    rfft: True -> `(n, N, N // 2 + 1)` (rfft2 layout), False -> `(n, N, N)` (fft2 layout,
    not centred). Scalars give a leading axis of length 1. The factor at wave numbers (ky, kx) is
    exp(−2πi (kx·shift_x + ky·shift_y) / N), with ky, kx signed as in `frequency_grid`; for even
    N the Nyquist terms are taken at +N/2 (use even shifts or mask Nyquist when that matters).
    """
    if xp is None:
        xp = _namespace_of(shift_x_px, shift_y_px)
    sx = xp.reshape(xp.asarray(shift_x_px, dtype=xp.float64), (-1,))
    sy = xp.reshape(xp.asarray(shift_y_px, dtype=xp.float64), (-1,))
    sx, sy = xp.broadcast_arrays(sx, sy)
    ky, kx = _wave_numbers(int(box_px), rfft, xp)
    phase_x = xp.exp((-2j * numpy.pi / box_px) * (sx[:, None] * kx[None, :]))
    phase_y = xp.exp((-2j * numpy.pi / box_px) * (sy[:, None] * ky[None, :]))
    return (phase_y[:, :, None] * phase_x[:, None, :]).astype(dtype)


def shift_images(images: Any, shift_x_px: Any, shift_y_px: Any) -> Any:
    """Translate square images `(n, N, N)` by (+shift_x_px, +shift_y_px) pixels via the FFT.

    Shifts are scalars or `(n,)` arrays; integer shifts are exact circular shifts. Returns the
    input's float dtype (float32 for other dtypes).
    """
    from ._fft import irfft2, rfft2

    xp = array_namespace(images)
    real_dtype = xp.float64 if images.dtype == xp.float64 else xp.float32
    complex_dtype = xp.complex128 if real_dtype == xp.float64 else xp.complex64
    box = int(images.shape[-1])
    spectra = rfft2(xp.asarray(images, dtype=real_dtype))
    spectra = spectra * shift_phase(box, shift_x_px, shift_y_px, dtype=complex_dtype, xp=xp)
    return irfft2(spectra, (box, box)).astype(real_dtype, copy=False)
