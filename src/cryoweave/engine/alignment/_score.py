"""The score of projection matching: the band of Fourier coefficients, particles prepared
for it, phase ramps for shifts, reference rows, and the normalised cross-correlation (NCC)
(see `_alignment` for the formula). `pose_scores` is the NCC of given poses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy

from .._backend import array_namespace, to_host
from .._fft import fft_wave_numbers, rfft2
from .._geometry import euler_to_matrix, matrix_to_euler

if TYPE_CHECKING:
    from .._projection import Projector

DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30
_PROJECTION_CHUNK = 4096


@dataclasses.dataclass(frozen=True)
class AlignmentResult:
    """Best pose per particle; all arrays `(n,)` float64 on the host.

    Angles in degrees (RELION ZYZ), origins in pixels of the working box (RELION: shift the
    image by +origin to compare it with the projection), `score` the NCC of that pose.
    `second_score`: the best NCC found at an orientation more than two angular steps away
    (symmetry-aware), NaN when the search met none (global search only; NaN for local).
    Local search only, else None: `angular_change_deg`, the symmetry-aware angle between the
    starting and the found orientation; `defocus_change_a`, the defocus offset (Å, added to U
    and V) when defocus was refined. `timings`: seconds per stage.
    """

    rot_deg: numpy.ndarray
    tilt_deg: numpy.ndarray
    psi_deg: numpy.ndarray
    origin_x_px: numpy.ndarray
    origin_y_px: numpy.ndarray
    score: numpy.ndarray
    second_score: numpy.ndarray
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    angular_change_deg: numpy.ndarray | None = None
    defocus_change_a: numpy.ndarray | None = None

    @property
    def rejected(self) -> numpy.ndarray:
        """Particles whose best NCC is below 0 (or not finite): the caller drops them."""
        return ~(self.score >= 0.0)

    @classmethod
    def from_matrices(cls, matrices: numpy.ndarray, origins: numpy.ndarray,
                      score: numpy.ndarray, second_score: numpy.ndarray,
                      timings: dict[str, float]) -> AlignmentResult:
        """From host rotation matrices `(n, 3, 3)`, origins `(n, 2)` px and scores `(n,)`."""
        rot, tilt, psi = matrix_to_euler(matrices)
        origins = numpy.asarray(origins, dtype=numpy.float64)
        return cls(rot, tilt, psi, origins[:, 0].copy(), origins[:, 1].copy(),
                   numpy.asarray(score, dtype=numpy.float64),
                   numpy.asarray(second_score, dtype=numpy.float64), timings)

    def matrices(self) -> numpy.ndarray:
        """Rotation matrices `(n, 3, 3)` float64 of the poses (`euler_to_matrix`)."""
        return euler_to_matrix(self.rot_deg, self.tilt_deg, self.psi_deg)


# ---------------------------------------------------------------- band, particles, gallery


@dataclasses.dataclass(frozen=True)
class Band:
    """Kept half-plane coefficients (module notes), sorted by radius: host arrays `(C,)`."""

    box_px: int
    flat: numpy.ndarray  # index into the flattened (N, N//2+1) rfft2 grid
    kx: numpy.ndarray
    ky: numpy.ndarray
    radius: numpy.ndarray

    def count_within(self, r_max_px: float) -> int:
        """How many kept coefficients have |k| ≤ r_max_px (a prefix: sorted by radius)."""
        return int(numpy.searchsorted(self.radius, r_max_px + 1e-9, side="right"))


@functools.lru_cache(maxsize=16)
def band(box_px: int, r_min_px: float, r_max_px: float) -> Band:
    """The band of an N-pixel box between r_min_px (excluded) and r_max_px (included)."""
    if not 0.0 <= r_min_px < r_max_px:
        raise ValueError(
            f"need 0 ≤ r_min_px < r_max_px; got r_min_px={r_min_px}, r_max_px={r_max_px} "
            "(Fourier pixels of the working box)"
        )
    n, h = int(box_px), int(box_px) // 2 + 1
    ky = fft_wave_numbers(n, dtype=int)[:, None] + numpy.zeros((1, h), dtype=int)
    kx = fft_wave_numbers(n, rfft=True, dtype=int)[None, :] + numpy.zeros((n, 1), dtype=int)
    radius = numpy.hypot(kx, ky)
    keep = (radius > r_min_px + 1e-9) & (radius <= r_max_px + 1e-9)
    keep &= (kx > 0) | (ky > 0)  # one of each conjugate pair
    keep &= (2 * kx != n) & (2 * numpy.abs(ky) != n)  # no Nyquist lines
    flat = numpy.flatnonzero(keep)
    order = numpy.argsort(radius.ravel()[flat], kind="stable")
    flat = flat[order]
    if flat.size == 0:
        raise ValueError(
            f"no Fourier coefficient with {r_min_px} < radius ≤ {r_max_px} in a {n}-pixel box; "
            "raise r_max_px"
        )
    return Band(n, flat, kx.ravel()[flat].astype(float), ky.ravel()[flat].astype(float),
                radius.ravel()[flat])


@dataclasses.dataclass(frozen=True)
class Particles:
    """Band coefficients of a particle batch: CTF·X `(b, C)` complex64, CTF² and |X|²
    `(b, C)` float32."""

    ctf_x: Any
    ctf2: Any
    power: Any

    def norm(self, n_coeffs: int) -> Any:
        """‖X‖ over the first `n_coeffs` band coefficients, `(b,)` float32."""
        xp = array_namespace(self.power)
        return xp.sqrt(xp.sum(self.power[:, :n_coeffs], axis=1))


def prepare_particles(images: Any, ctfs: Any, the_band: Band, workers: int | None) -> Particles:
    """images `(b, N, N)` real, ctfs `(b, N, N//2+1)` (or shared `(N, N//2+1)`) -> `Particles`."""
    xp = array_namespace(images, ctfs)
    n, b = the_band.box_px, images.shape[0]
    flat = xp.asarray(the_band.flat)
    spectra = rfft2(xp.asarray(images, dtype=xp.float32), workers=workers)
    x = xp.reshape(spectra, (b, -1))[:, flat].astype(xp.complex64)
    ctf = xp.reshape(xp.asarray(ctfs, dtype=xp.float32), (-1, n * (n // 2 + 1)))[:, flat]
    ctf = xp.broadcast_to(ctf, x.shape)
    power = (x.real * x.real + x.imag * x.imag).astype(xp.float32)
    return Particles(xp.ascontiguousarray(x * ctf), xp.ascontiguousarray(ctf * ctf),
                     xp.ascontiguousarray(power))


def shift_phases(the_band: Band, origins_xy_px: Any, n_coeffs: int | None = None) -> Any:
    """e^{−2πi k·o/N} at the band coefficients for origins `(..., 2)` px: `(..., C)` complex64
    (translates an image by +o)."""
    xp = array_namespace(origins_xy_px)
    c = len(the_band.flat) if n_coeffs is None else n_coeffs
    n = the_band.box_px
    o = xp.asarray(origins_xy_px, dtype=xp.float64)
    # separable: exponentials on the x and y axes, then one gather each
    k = xp.arange(n, dtype=xp.float64) - n // 2
    along_x = xp.exp((-2j * math.pi / n) * o[..., 0:1] * k[n // 2:]).astype(xp.complex64)
    along_y = xp.exp((-2j * math.pi / n) * o[..., 1:2] * k).astype(xp.complex64)
    kx = xp.asarray(the_band.kx[:c].astype(numpy.int64))
    ky = xp.asarray(the_band.ky[:c].astype(numpy.int64) + n // 2)
    return xp.take(along_x, kx, axis=-1) * xp.take(along_y, ky, axis=-1)


def as_projector(reference: Any, r_max_px: float, like: Any) -> Projector:
    """A `Projector` for a volume `(N, N, N)` (band-limited to r_max_px), or `reference` itself;
    TypeError when it is not on the backend of `like` (the images)."""
    # from the package, not its (changing) private module; at call time, so that the package
    # may re-export this module
    from cryoweave.engine import Projector

    box = like.shape[-1]
    if isinstance(reference, Projector):
        if reference.geometry.r_max_px + 1e-6 < min(r_max_px, box / 2 - 1):
            raise ValueError(
                f"the Projector keeps radii ≤ {reference.geometry.r_max_px} px but r_max_px="
                f"{r_max_px}; build it with Projector.from_volume(volume, r_max_px={r_max_px})"
            )
        projector = reference
    else:
        if reference.shape != (box,) * 3:
            raise ValueError(f"the reference must be ({box}, {box}, {box}) like the images; got "
                             f"{tuple(reference.shape)} (rescale it to the working box)")
        projector = Projector.from_volume(reference, r_max_px=r_max_px)
    if projector.geometry.box_px != box:
        raise ValueError(f"the Projector is for {projector.geometry.box_px}-pixel images, the "
                         f"images are {box} pixels")
    array_namespace(projector.grid, like)  # TypeError on a NumPy/CuPy mix
    return projector


def project_band(projector: Projector, matrices: Any, the_band: Band,
                 n_coeffs: int | None = None) -> tuple[Any, Any]:
    """Reference rows of orientations `(R, 3, 3)`: interleaved (Re, Im) `(R, 2C)` float32 and
    |P|² `(R, C)` float32, over the first `n_coeffs` band coefficients."""
    rows = band_rows(projector, matrices, the_band, n_coeffs)
    return rows, row_power(rows)


def band_rows(projector: Projector, matrices: Any, the_band: Band,
              n_coeffs: int | None = None) -> Any:
    """The interleaved (Re, Im) rows `(R, 2C)` float32 of `project_band`, without |P|²."""
    xp = array_namespace(projector.grid)
    c = len(the_band.flat) if n_coeffs is None else n_coeffs
    flat = the_band.flat[:c]
    count = matrices.shape[0]

    def chunk(start: int, stop: int) -> Any:
        return real_view(xp.asarray(projector.sample(matrices[start:stop], flat),
                                    dtype=xp.complex64))

    if count <= _PROJECTION_CHUNK:  # the samples' own memory holds the rows: no copy
        return chunk(0, count)
    rows = xp.empty((count, 2 * c), dtype=xp.float32)
    for start in range(0, count, _PROJECTION_CHUNK):
        stop = min(count, start + _PROJECTION_CHUNK)
        rows[start:stop] = chunk(start, stop)
    return rows


def row_power(rows: Any) -> Any:
    """|P|² `(..., C)` float32 of interleaved (Re, Im) float32 rows `(..., 2C)` (contiguous)."""
    values = rows.view(array_namespace(rows).complex64)
    return values.real * values.real + values.imag * values.imag


def real_view(values: Any) -> Any:
    """Complex `(..., C)` as interleaved (Re, Im) float `(..., 2C)` (a view when contiguous):
    Re(a·conj b) is then the dot product of the two rows."""
    xp = array_namespace(values)
    return xp.ascontiguousarray(values).view(xp.float32 if values.dtype == xp.complex64
                                             else xp.float64)


def ncc_denominator(norm: Any, ctf2: Any, power: Any) -> Any:
    """‖X‖·sqrt(CTF²·|P|²); zero-energy references get an infinite denominator (NCC 0)."""
    xp = array_namespace(ctf2, power)
    energy = ctf2 @ power
    return norm * xp.sqrt(xp.where(energy > 0, energy, xp.inf))


def row_denominator(parts: Particles, power: Any) -> Any:
    """‖X_i‖·sqrt(Σ CTF_i²|P_i|²) `(b,)` for one reference per particle, power `(b, C)`."""
    xp = array_namespace(power)
    energy = xp.sum(parts.ctf2[:, : power.shape[1]] * power, axis=1)
    return parts.norm(power.shape[1]) * xp.sqrt(xp.where(energy > 0, energy, xp.inf))


def _sync(xp: ModuleType) -> None:
    if xp is not numpy:  # GPU work is asynchronous: wait before reading the clock
        xp.cuda.get_current_stream().synchronize()


def _parabola_vertex(minus: Any, centre: Any, plus: Any) -> Any:
    """Vertex offset (in steps, within ±0.5) of the parabola through 3 equally spaced values;
    0 where the centre is not a strict maximum of a concave fit."""
    xp = array_namespace(centre)
    curvature = minus - 2.0 * centre + plus
    concave = curvature < 0
    offset = xp.where(concave, 0.5 * (minus - plus) / xp.where(concave, curvature, -1.0), 0.0)
    return xp.clip(offset, -0.5, 0.5)


# ---------------------------------------------------------------- the search plan


def _check_inputs(images: Any, ctfs: Any) -> ModuleType:
    xp = array_namespace(images, ctfs)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be (n, N, N); got {tuple(images.shape)}")
    n, box = images.shape[0], images.shape[1]
    if ctfs.shape[-2:] != (box, box // 2 + 1) or ctfs.ndim not in (2, 3) or (
            ctfs.ndim == 3 and ctfs.shape[0] != n):
        raise ValueError(
            f"ctfs must be ({n}, {box}, {box // 2 + 1}) or shared ({box}, {box // 2 + 1}) on the "
            f"rfft2 grid (ctf_2d); got {tuple(ctfs.shape)}"
        )
    return xp


def _batch_ctf(ctfs: Any, start: int, stop: int) -> Any:
    return ctfs if ctfs.ndim == 2 else ctfs[start:stop]


def _subset(parts: Particles, index: Any) -> Particles:
    return Particles(parts.ctf_x[index], parts.ctf2[index], parts.power[index])


def pose_scores(
    images: Any,
    ctfs: Any,
    reference: Any,
    *,
    rot_deg: Any,
    tilt_deg: Any,
    psi_deg: Any,
    origin_x_px: Any,
    origin_y_px: Any,
    r_max_px: float,
    r_min_px: float = 1.0,
) -> numpy.ndarray:
    """NCC `(n,)` float64 (host) of each particle at its given pose (module notes).

    Same inputs and band as `global_search`; poses are `(n,)` arrays (degrees, pixels).
    """
    xp = _check_inputs(images, ctfs)
    n, box = images.shape[0], images.shape[1]
    the_band = band(box, float(r_min_px), float(r_max_px))
    projector = as_projector(reference, r_max_px, images)
    matrices = euler_to_matrix(*(xp.asarray(a, dtype=xp.float64) for a in
                                 (rot_deg, tilt_deg, psi_deg)))
    origins = xp.stack([xp.asarray(origin_x_px, dtype=xp.float64),
                        xp.asarray(origin_y_px, dtype=xp.float64)], axis=-1)
    out = []
    for start in range(0, n, _PROJECTION_CHUNK):
        stop = min(n, start + _PROJECTION_CHUNK)
        parts = prepare_particles(images[start:stop], _batch_ctf(ctfs, start, stop), the_band,
                                  None)
        rows, power = project_band(projector, matrices[start:stop], the_band)
        y = parts.ctf_x * shift_phases(the_band, origins[start:stop])
        num = xp.sum(real_view(y) * rows, axis=1)
        den = row_denominator(parts, power)
        out.append(to_host(num / den))
    return numpy.concatenate(out).astype(numpy.float64)
