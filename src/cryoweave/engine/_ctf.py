"""Contrast transfer function (RELION formula; Xmipp is numerically identical).

With u the spatial frequency in 1/Å and φ its direction (angle from +x toward +y):

    λ(Å)   = 12.2643247 / sqrt(V · (1 + 0.978466e-6 · V)),  V in volts
    D(φ)   = (U + V)/2 + (U − V)/2 · cos(2(φ − angle))        defocus U, V in Å, + = underfocus
    γ(u,φ) = π λ D(φ) u² − (π/2) Cs λ³ u⁴ + phase_shift       Cs in mm × 1e7 -> Å
    CTF    = scale · exp(−B u²/4) · (sqrt(1 − Q0²) sin γ + Q0 cos γ)

which is RELION's `−sin(argument)` in ctf.h and is positive as u → 0 for Q0 > 0. CTF images use
the FFT layouts of the engine (not centred): rfft2 `(n, N, N // 2 + 1)` or fft2 `(n, N, N)`,
with the digital frequency of index i being i/N for i ≤ N/2, else (i − N)/N.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy

from ._backend import array_namespace
from ._fft import fft_wave_numbers

RELATIVISTIC_FACTOR_PER_V = 0.978466e-6
WAVELENGTH_CONSTANT_A = 12.2643247
MM_TO_A = 1e7


def electron_wavelength_a(voltage_kv: Any) -> Any:
    """Relativistic electron wavelength in Å for an acceleration voltage in kV (300 -> 0.019687)."""
    volts = voltage_kv * 1e3
    return WAVELENGTH_CONSTANT_A / (volts * (1.0 + RELATIVISTIC_FACTOR_PER_V * volts)) ** 0.5


def _namespace(values: list[Any], xp: ModuleType | None) -> ModuleType:
    """`xp`, else the namespace of the array arguments (scalars and lists count as NumPy)."""
    if xp is not None:
        return xp
    arrays = [v for v in values if type(v).__module__.split(".")[0] in ("numpy", "cupy")]
    return array_namespace(*arrays) if arrays else numpy


def _per_particle(xp: ModuleType, n: int, name: str, value: Any) -> Any:
    arr = xp.reshape(xp.asarray(value, dtype=xp.float64), (-1,))
    if arr.shape[0] not in (1, n):
        raise ValueError(
            f"{name} has {arr.shape[0]} values but there are {n} particles; pass one value or "
            f"one per particle"
        )
    return xp.broadcast_to(arr, (n,))


def ctf_coefficients(
    defocus_u_a: Any,
    defocus_v_a: Any,
    defocus_angle_deg: Any,
    *,
    voltage_kv: Any,
    cs_mm: Any,
    amplitude_contrast: Any,
    phase_shift_deg: Any = 0.0,
    xp: ModuleType | None = None,
) -> Any:
    """Per-particle coefficients `(n, 5)` float64 of γ + atan(Q0/√(1−Q0²)) in the basis
    (u², u² cos 2φ, u² sin 2φ, u⁴, 1) (u in 1/Å); see `ctf_from_basis`.

    Inputs are scalars or `(n,)` arrays (defocus in Å, angles in degrees, kV, mm). Raises
    ValueError when the amplitude contrast is outside [0, 1).
    """
    values = [defocus_u_a, defocus_v_a, defocus_angle_deg, voltage_kv, cs_mm, amplitude_contrast,
              phase_shift_deg]
    xp = _namespace(values, xp)
    names = ["defocus_u_a", "defocus_v_a", "defocus_angle_deg", "voltage_kv", "cs_mm",
             "amplitude_contrast", "phase_shift_deg"]
    arrays = [xp.reshape(xp.asarray(v, dtype=xp.float64), (-1,)) for v in values]
    n = max(int(a.shape[0]) for a in arrays)
    du, dv, angle, kv, cs, q0, phase = (
        _per_particle(xp, n, k, v) for k, v in zip(names, arrays, strict=True))
    if bool(xp.any((q0 < 0) | (q0 >= 1))):
        raise ValueError(
            f"amplitude_contrast must be in [0, 1) (a fraction, e.g. 0.1); got values in "
            f"[{float(q0.min())}, {float(q0.max())}]"
        )
    lam = electron_wavelength_a(kv)
    two_angle = 2.0 * xp.deg2rad(angle)
    mean, half = (du + dv) / 2.0, (du - dv) / 2.0
    return xp.stack(
        [
            numpy.pi * lam * mean,
            numpy.pi * lam * half * xp.cos(two_angle),
            numpy.pi * lam * half * xp.sin(two_angle),
            -numpy.pi / 2.0 * cs * MM_TO_A * lam**3,
            xp.deg2rad(phase) + xp.arctan(q0 / xp.sqrt(1.0 - q0**2)),
        ],
        axis=-1,
    )


def ctf_basis(freq_x_per_a: Any, freq_y_per_a: Any) -> Any:
    """Basis `(5, m)` float64 (u², u² cos 2φ, u² sin 2φ, u⁴, 1) at m frequencies (1/Å)."""
    xp = array_namespace(freq_x_per_a, freq_y_per_a)
    fx = xp.reshape(xp.asarray(freq_x_per_a, dtype=xp.float64), (-1,))
    fy = xp.reshape(xp.asarray(freq_y_per_a, dtype=xp.float64), (-1,))
    u2 = fx**2 + fy**2
    # u² cos 2φ = fx² − fy², u² sin 2φ = 2 fx fy
    return xp.stack([u2, fx**2 - fy**2, 2.0 * fx * fy, u2**2, xp.ones_like(u2)])


def ctf_from_basis(
    coefficients: Any, basis: Any, envelope: Any | None = None, *, dtype: Any = numpy.float64
) -> Any:
    """CTF values `(n, m)` = sin(coefficients @ basis) (times `envelope` `(n, m)`), as `dtype`.

    The phase is formed in float64 and reduced modulo 2π before a float32 sine, so float32
    results carry float32 rounding only.
    """
    xp = array_namespace(coefficients, basis)
    phase = coefficients @ basis
    if dtype != xp.float64:
        phase = (phase - (2.0 * numpy.pi) * xp.rint(phase / (2.0 * numpy.pi))).astype(dtype)
    values = xp.sin(phase)
    return values if envelope is None else values * envelope.astype(values.dtype)


def _grid_frequencies(box_px: int, pixel_size_a: float, rfft: bool, xp: ModuleType) -> tuple:
    ky = fft_wave_numbers(box_px, xp)
    kx = fft_wave_numbers(box_px, xp, rfft=True) if rfft else ky
    scale = 1.0 / (box_px * pixel_size_a)
    fy, fx = xp.meshgrid(ky * scale, kx * scale, indexing="ij")
    return fx, fy


def ctf_2d(
    defocus_u_a: Any,
    defocus_v_a: Any,
    defocus_angle_deg: Any,
    *,
    voltage_kv: Any,
    cs_mm: Any,
    amplitude_contrast: Any,
    pixel_size_a: float,
    box_px: int,
    phase_shift_deg: Any = 0.0,
    bfactor: Any = 0.0,
    scale: Any = 1.0,
    rfft: bool = True,
    dtype: Any = numpy.float32,
    xp: ModuleType | None = None,
) -> Any:
    """CTF images of n particles, on the rfft2 grid `(n, N, N // 2 + 1)` or fft2 grid `(n, N, N)`.

    All parameters are scalars or `(n,)` arrays (n = the longest): defocus U/V in Å (positive =
    underfocus), defocus angle in degrees from +x toward +y, voltage in kV, Cs in mm, amplitude
    contrast Q0 as a fraction, phase shift in degrees, B-factor in Å² (envelope exp(−B u²/4)) and
    scale. `pixel_size_a` is the image pixel size in Å, `box_px` the square box N (odd or even).
    Grids are in FFT order (index 0 = zero frequency); `fftshift` them for display. The backend
    is `xp`, else that of the array arguments, else NumPy. Returns `dtype` (float32).
    """
    if pixel_size_a <= 0 or int(box_px) < 1:
        raise ValueError(
            f"pixel_size_a={pixel_size_a} and box_px={box_px} must be positive (Å, pixels)"
        )
    coefficients = ctf_coefficients(
        defocus_u_a, defocus_v_a, defocus_angle_deg, voltage_kv=voltage_kv, cs_mm=cs_mm,
        amplitude_contrast=amplitude_contrast, phase_shift_deg=phase_shift_deg, xp=xp,
    )
    xp = array_namespace(coefficients)
    n = coefficients.shape[0]
    fx, fy = _grid_frequencies(int(box_px), float(pixel_size_a), rfft, xp)
    basis = ctf_basis(fx, fy)
    envelope = None
    bfactor = _per_particle(xp, n, "bfactor", bfactor)
    scale = _per_particle(xp, n, "scale", scale)
    if bool(xp.any(bfactor != 0)) or bool(xp.any(scale != 1)):
        envelope = scale[:, None] * xp.exp(-bfactor[:, None] / 4.0 * basis[0][None, :])
    values = ctf_from_basis(coefficients, basis, envelope, dtype=dtype)
    return xp.reshape(values, (n, *fx.shape)).astype(dtype, copy=False)


def phase_flip(spectra: Any, ctf: Any) -> Any:
    """Multiply spectra by sign(CTF) (phase flipping); shapes broadcast, e.g. `(n, N, N//2+1)`.

    After flipping, later uses of the CTF must take |CTF| (a set property: phase-flipped).
    """
    xp = array_namespace(spectra, ctf)
    return spectra * xp.sign(ctf).astype(ctf.dtype)


def wiener_filter(spectra: Any, ctf: Any, *, wiener_constant: float = 0.1) -> Any:
    """CTF-correct spectra with a Wiener filter: F · CTF / (CTF² + wiener_constant).

    `wiener_constant` ≈ 1/SNR (> 0); shapes broadcast as in `phase_flip`.
    """
    if not wiener_constant > 0:
        raise ValueError(
            f"wiener_constant={wiener_constant} must be > 0 (about 1/SNR, e.g. 0.1)"
        )
    return spectra * (ctf / (ctf * ctf + wiener_constant))


def group_identical_ctfs(parameters: Any) -> tuple[Any, Any]:
    """Group particles whose CTF parameters are identical.

    parameters: `(n, k)` array, one row per particle (e.g. defocus U, V, angle, phase shift,
    B-factor and optics-group values). Returns `(unique_rows (m, k), inverse (n,) int64)` with
    `unique_rows[inverse] == parameters`, so each distinct CTF is computed once:
    `ctf_2d(*unique_rows.T[:3], ...)[inverse]`. Rows are compared exactly (equal floats).
    """
    xp = array_namespace(parameters)
    rows = xp.asarray(parameters)
    if rows.ndim != 2:
        raise ValueError(f"parameters must be (n, k), one row per particle; got {rows.shape}")
    n = rows.shape[0]
    if n == 0:
        return rows, xp.zeros(0, dtype=xp.int64)
    order = xp.lexsort(rows.T[::-1])
    ordered = rows[order]
    new_group = xp.concatenate(
        [xp.ones(1, dtype=bool), xp.any(ordered[1:] != ordered[:-1], axis=1)]
    )
    group_of_sorted = xp.cumsum(new_group) - 1
    inverse = xp.empty(n, dtype=xp.int64)
    inverse[order] = group_of_sorted
    return ordered[new_group], inverse
