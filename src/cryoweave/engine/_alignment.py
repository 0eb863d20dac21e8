"""Global angular assignment: projection matching by normalised cross-correlation (NCC).

Score of particle i (half spectrum X_i, CTF_i on the rfft2 grid) against the reference
orientation j (projection spectrum P_j, no CTF) at the RELION origin o (pixels):

    NCC = Re Σ_B CTF_i X_i e^{−2πi k·o/N} conj(P_j) / (‖X_i‖_B · sqrt(Σ_B CTF_i² |P_j|²))

over the band B of wave numbers k with r_min_px < |k| ≤ r_max_px. B keeps one coefficient of
every conjugate pair (kx > 0, or kx = 0 and ky > 0) and drops the Nyquist lines of even boxes,
so each kept coefficient stands for exactly two of the full spectrum and NCC is the real-space
normalised inner product ⟨x, ctf∗p⟩ / (‖x‖ ‖ctf∗p‖) of the band-limited images (zero mean:
DC is out). The numerator is a float32 GEMM of interleaved (Re, Im) particle rows by reference
rows; the denominator a GEMM [CTF²]·[|P|²]ᵀ, which does not depend on the shift. The CTF sits on
the particle side, so one gallery serves every particle (pass |CTF| for phase-flipped data).

Shifts act on the particle: e^{−2πi k·o/N} translates the image by +o, and the particle equals
its centred projection translated by −o (RELION's origin), so the returned origins are RELION
origins in pixels. A particle at shift o is one more row of the particle matrix.

`global_search` is coarse-to-fine:
(a) coarse: directions at 2× the step (asymmetric unit, tilt range) × psi at that step, band
    radius `coarse_r_max_px`, origins on a grid of 2 × shift_step within the max_shift disc
    around the prior; per particle, the best `n_candidates` orientations (each with its best
    shift) are kept;
(b) fine: around each candidate, the fine directions within one coarse step (symmetry-aware)
    and the fine psi values within ± half a coarse step of the candidate's in-plane angle
    carried to that direction, times the 3 × 3 shifts at shift_step around the candidate's
    shift (clipped to the disc), at the full band. Fine projections are made on demand and
    cached;
(c) sub-pixel origins: a parabola through the 3 × 3 scores around the best shift, per axis;
(d) `refine_angles`: a short continuous polish below the grid step, the local pattern search
    of `_alignment_local` (first step ¼ of the angular step, at most 4 moves, within one step
    and half a shift step of the grid pose: tilts may leave the tilt range by < 1 step, and
    origins the max_shift disc by < ½ shift step).

Cost on the CPU: the coarse GEMM and the fine gathers scale with the particles; the galleries
(Projector.project) with the orientations; the polish is mostly on-the-fly projections.
Temporaries are kept to tens of MB per batch on the CPU (fresh pages cost more than the
GEMMs) and to memory_budget_bytes / 4 on a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy

from ._backend import array_namespace, batch_size_for, to_host
from ._fft import rfft2
from ._geometry import euler_to_matrix, matrix_to_euler
from ._sampling import psi_sampling, sphere_sampling
from ._symmetry import symmetry_aware_angular_distance, symmetry_matrices

if TYPE_CHECKING:
    from cryoweave.engine import Projector

DEFAULT_MEMORY_BUDGET_BYTES = 1 << 30
_PROJECTION_CHUNK = 4096
POLISH_MIN_STEP, POLISH_ITERATIONS = 1 / 16, 4


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
    k = numpy.arange(n)
    ky = numpy.where(k <= n // 2, k, k - n)[:, None] + numpy.zeros((1, h), dtype=int)
    kx = numpy.arange(h)[None, :] + numpy.zeros((n, 1), dtype=int)
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
    xp = array_namespace(projector.grid)
    c = len(the_band.flat) if n_coeffs is None else n_coeffs
    flat = xp.asarray(the_band.flat[:c])
    count = matrices.shape[0]
    rows = xp.empty((count, 2 * c), dtype=xp.float32)
    power = xp.empty((count, c), dtype=xp.float32)
    for start in range(0, count, _PROJECTION_CHUNK):
        stop = min(count, start + _PROJECTION_CHUNK)
        spectra = projector.project(matrices[start:stop], spectra=True)
        values = xp.reshape(spectra, (stop - start, -1))[:, flat].astype(xp.complex64)
        rows[start:stop] = real_view(values)
        power[start:stop] = values.real * values.real + values.imag * values.imag
    return rows, power


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


@dataclasses.dataclass(frozen=True)
class _Grid:
    """An orientation grid: directions × psi, orientation index = dir · n_psi + psi index."""

    rot_deg: numpy.ndarray
    tilt_deg: numpy.ndarray
    psi_deg: numpy.ndarray

    @property
    def size(self) -> int:
        return len(self.rot_deg) * len(self.psi_deg)

    def matrices(self, indices: Any | None = None) -> Any:
        """`(R, 3, 3)` float64 for all orientations (host) or for `indices` (their backend)."""
        n_psi = len(self.psi_deg)
        if indices is None:
            indices = numpy.arange(self.size)
        xp = array_namespace(indices)
        d, p = indices // n_psi, indices % n_psi
        return euler_to_matrix(xp.asarray(self.rot_deg)[d], xp.asarray(self.tilt_deg)[d],
                               xp.asarray(self.psi_deg)[p])


def _grid(step_deg: float, symmetry: str, min_tilt: float, max_tilt: float) -> _Grid:
    rot, tilt = sphere_sampling(step_deg, symmetry=symmetry, min_tilt_deg=min_tilt,
                                max_tilt_deg=max_tilt)
    if len(rot) == 0:
        raise ValueError(
            f"no projection direction at step {step_deg}° in tilt range [{min_tilt}, {max_tilt}]"
            f" for symmetry {symmetry!r}; widen the tilt range or use a finer step"
        )
    return _Grid(rot, tilt, psi_sampling(step_deg))


def _neighbour_tables(coarse: _Grid, fine: _Grid, radius_deg: float,
                      symmetry: str) -> tuple[numpy.ndarray, numpy.ndarray]:
    """For every coarse direction, the fine directions within radius_deg (symmetry-aware),
    `(Dc, L)` int64 (padded with the nearest), and the psi offset `(Dc, L)` degrees that carries
    a coarse in-plane angle to each: psi_fine ≈ psi_coarse + offset."""
    bc = euler_to_matrix(coarse.rot_deg, coarse.tilt_deg, 0.0)
    bf = euler_to_matrix(fine.rot_deg, fine.tilt_deg, 0.0)
    ops = symmetry_matrices(symmetry)
    fine_dirs = numpy.einsum("gij,fj->gfi", ops, bf[:, 2])  # the direction of A·Rᵀ is R·d
    limit = math.cos(math.radians(radius_deg)) - 1e-12
    lists, chunk = [], max(1, (1 << 22) // (len(ops) * len(bf)))
    for start in range(0, len(bc), chunk):
        cosines = numpy.einsum("ci,gfi->cfg", bc[start:start + chunk, 2], fine_dirs)
        best_op = numpy.argmax(cosines, axis=2)
        best_cos = numpy.take_along_axis(cosines, best_op[..., None], axis=2)[..., 0]
        for row_cos, row_op in zip(best_cos, best_op, strict=True):
            near = numpy.flatnonzero(row_cos >= limit)
            near = near[numpy.argsort(-row_cos[near], kind="stable")]
            if near.size == 0:
                near = numpy.array([numpy.argmax(row_cos)])
            lists.append((near, row_op[near]))
    width = max(len(near) for near, _ in lists)
    neighbours = numpy.array([numpy.resize(near, width) for near, _ in lists])
    ops_used = ops[numpy.array([numpy.resize(op, width) for _, op in lists])]
    # M = B_f Rᵀ B_cᵀ ≈ Rz(t): A_f(psi)·Rᵀ·A_cᵀ = Rz(psi)·M·Rz(−psi_c) is nearest the identity
    # at psi = psi_c − t
    m = bf[neighbours] @ numpy.swapaxes(ops_used, -1, -2) @ numpy.swapaxes(bc, -1, -2)[:, None]
    t = numpy.degrees(numpy.arctan2(m[..., 0, 1] - m[..., 1, 0], m[..., 0, 0] + m[..., 1, 1]))
    return neighbours, -t


@dataclasses.dataclass(frozen=True)
class _Plan:
    band: Band
    fine_step_deg: float
    coarse: _Grid
    fine: _Grid
    coarse_coeffs: int  # band prefix of the coarse pass
    neighbours: numpy.ndarray  # (Dc, Ld) fine directions per coarse direction
    psi_offset_deg: numpy.ndarray  # (Dc, Ld)
    psi_half_width: int  # fine psi steps either side
    shift_step_px: float
    max_shift_px: float
    coarse_offsets: numpy.ndarray  # (Sc, 2) int, in shift steps
    fine_offsets: numpy.ndarray  # (Sf, 2) int, in shift steps, around a coarse offset
    table_half_width: int  # phase table covers integer offsets in [−w, w]²


def _plan(step_deg, symmetry, min_tilt, max_tilt, max_shift_px, shift_step_px, the_band,
          coarse_r_max_px) -> _Plan:
    coarse_step = min(2.0 * step_deg, max(step_deg, 30.0))
    coarse, fine = (_grid(s, symmetry, min_tilt, max_tilt) for s in (coarse_step, step_deg))
    neighbours, psi_offset = _neighbour_tables(coarse, fine, coarse_step, symmetry)
    ratio = coarse_step / step_deg
    # ± half a coarse psi step; the candidates' own neighbours cover the rest (measured: as
    # good as ± (coarse + fine)/2 against a brute-force search down to SNR 0.03)
    half_width = max(1, math.ceil(ratio / 2.0))
    reach = math.floor(max_shift_px / shift_step_px + 1e-9)
    factor = 2 if reach >= 2 else 1
    grid = numpy.arange(-reach, reach + 1)
    ij = numpy.stack(numpy.meshgrid(grid, grid, indexing="xy"), axis=-1).reshape(-1, 2)
    in_disc = numpy.hypot(ij[:, 0], ij[:, 1]) * shift_step_px <= max_shift_px + 1e-9
    coarse_offsets = ij[in_disc & numpy.all(ij % factor == 0, axis=1)]
    fine_offsets = numpy.stack(numpy.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="xy"),
                               axis=-1).reshape(-1, 2)
    return _Plan(the_band, step_deg, coarse, fine, the_band.count_within(coarse_r_max_px),
                 neighbours, psi_offset, half_width, shift_step_px, max_shift_px, coarse_offsets,
                 fine_offsets, reach + 1)


class _FineGallery:
    """Fine reference rows made on demand (`prepare` a chunk's orientations, then `take`):
    kept for the whole call when the full gallery fits in `budget_bytes`, else only the
    current chunk's."""

    def __init__(self, projector: Projector, grid: _Grid, the_band: Band, budget_bytes: int):
        self.projector, self.grid, self.band = projector, grid, the_band
        xp = array_namespace(projector.grid)
        c = len(the_band.flat)
        self.bytes_per_row = 3 * c * 4
        self.cached = grid.size * self.bytes_per_row <= budget_bytes
        self.rows = xp.zeros((grid.size if self.cached else 0, 2 * c), dtype=xp.float32)
        self.power = xp.zeros((self.rows.shape[0], c), dtype=xp.float32)
        self.done = xp.zeros(self.rows.shape[0], dtype=bool)
        self.held = None  # sorted orientation indices held when not cached
        self.projected = 0

    def prepare(self, orientations: Any) -> None:
        """Project the fine orientations `(...)` (indices) that `take` will be asked for."""
        needed = array_namespace(orientations).unique(orientations)
        if self.cached:
            needed = needed[~self.done[needed]]
        if needed.shape[0]:
            rows, power = project_band(self.projector, self.grid.matrices(needed), self.band)
            self.projected += int(needed.shape[0])
            if self.cached:
                self.rows[needed], self.power[needed] = rows, power
                self.done[needed] = True
            else:
                self.rows, self.power, self.held = rows, power, needed

    def take(self, orientations: Any) -> tuple[Any, Any]:
        """Rows `(..., 2C)` and |P|² `(..., C)` of prepared fine orientation indices `(...)`."""
        xp = array_namespace(orientations)
        index = orientations if self.cached else xp.searchsorted(self.held, orientations)
        return self.rows[index], self.power[index]


# ---------------------------------------------------------------- the passes


def gemm_scores(parts: Particles, phases: Any, rows_t: Any, power_t: Any) -> tuple[Any, Any]:
    """NCC of every particle × shift × reference as two GEMMs, over the first c = len(power_t)
    band coefficients: numerator `(b, S, R)` and denominator `(b, R)` (NCC = num / den).

    phases: `(b, S, c)` complex64 shift factors (`shift_phases`); rows_t `(2c, R)` and
    power_t `(c, R)`: the references' interleaved rows and |P|², transposed (`project_band`).
    """
    xp = array_namespace(parts.ctf_x)
    c, b = power_t.shape[0], parts.ctf_x.shape[0]
    y = parts.ctf_x[:, None, :c] * phases  # (b, S, c)
    num = xp.reshape(real_view(y), (-1, 2 * c)) @ rows_t
    den = ncc_denominator(parts.norm(c)[:, None], parts.ctf2[:, :c], power_t)
    return xp.reshape(num, (b, y.shape[1], -1)), den


def _coarse_pass(parts: Particles, prior_phase: Any, plan: _Plan, rows_t: Any, power_t: Any,
                 table: Any, n_candidates: int) -> tuple[Any, Any]:
    """Best `n_candidates` coarse orientations per particle `(b, K)` and their shift
    indices into `plan.coarse_offsets` `(b, K)`."""
    xp = array_namespace(parts.ctf_x)
    c = plan.coarse_coeffs
    phases = prior_phase[:, None, :c] * table[None, :, :c]
    num, den = gemm_scores(parts, phases, rows_t, power_t)
    ncc = xp.max(num, axis=1) / den  # den does not depend on the shift
    k = min(n_candidates, ncc.shape[1])
    top = xp.argpartition(-ncc, k - 1, axis=1)[:, :k]
    # the best shift of the kept orientations only (an argmax over all is a slow strided pass)
    best_shift = xp.argmax(xp.take_along_axis(num, top[:, None, :], axis=2), axis=1)
    return top, best_shift


def _fine_orientations(plan: _Plan, coarse_orientations: Any) -> Any:
    """Fine orientation indices `(b, K, L)` around coarse orientation indices `(b, K)`."""
    xp = array_namespace(coarse_orientations)
    n_psi_c, n_psi_f = len(plan.coarse.psi_deg), len(plan.fine.psi_deg)
    direction = coarse_orientations // n_psi_c
    psi = xp.asarray(plan.coarse.psi_deg)[coarse_orientations % n_psi_c]
    fine_dirs = xp.asarray(plan.neighbours)[direction]  # (b, K, Ld)
    centre = (psi[..., None] + xp.asarray(plan.psi_offset_deg)[direction]) * (n_psi_f / 360.0)
    centre = xp.rint(centre).astype(xp.int64)
    steps = xp.arange(-plan.psi_half_width, plan.psi_half_width + 1)
    psi_index = (centre[..., None] + steps) % n_psi_f
    index = fine_dirs[..., None] * n_psi_f + psi_index
    return xp.reshape(index, (*coarse_orientations.shape, -1))


def _fine_pass(parts, prior_phase, plan, gallery, table, index_of, orientations, coarse_shift):
    """Best NCC per candidate: (score `(b, K)`, fine orientation `(b, K)`, offset `(b, K, 2)`
    in shift steps)."""
    xp = array_namespace(parts.ctf_x)
    b, k, n_orient = orientations.shape
    rows, power = gallery.take(orientations)  # (b, K, L, 2C), (b, K, L, C)
    c = power.shape[-1]
    offsets = (xp.asarray(plan.coarse_offsets)[coarse_shift][:, :, None, :]
               + xp.asarray(plan.fine_offsets))  # (b, K, Sf, 2)
    n_shift = offsets.shape[2]
    radius = xp.sqrt(xp.sum(offsets.astype(xp.float64) ** 2, axis=-1)) * plan.shift_step_px
    w = plan.table_half_width
    phase = table[index_of[offsets[..., 1] + w, offsets[..., 0] + w]]  # (b, K, Sf, C)
    y = (parts.ctf_x * prior_phase)[:, None, None, :] * phase
    y = xp.reshape(real_view(y), (b * k, n_shift, 2 * c))
    num = y @ xp.swapaxes(xp.reshape(rows, (b * k, n_orient, 2 * c)), 1, 2)
    energy = xp.reshape(power, (b, k * n_orient, c)) @ parts.ctf2[:, :, None]
    energy = xp.reshape(energy, (b * k, 1, n_orient))
    ncc = num / (xp.repeat(parts.norm(c), k)[:, None, None]
                 * xp.sqrt(xp.where(energy > 0, energy, xp.inf)))
    ncc = xp.where(xp.reshape(radius <= plan.max_shift_px + 1e-9, (b * k, n_shift, 1)), ncc,
                   -xp.inf)
    flat = xp.argmax(xp.reshape(ncc, (b * k, -1)), axis=1)
    score = xp.reshape(xp.max(xp.reshape(ncc, (b * k, -1)), axis=1), (b, k))
    shift_i, orient_i = flat // n_orient, flat % n_orient
    best_orient = xp.reshape(xp.reshape(orientations, (b * k, -1))[xp.arange(b * k), orient_i],
                             (b, k))
    best_offset = xp.reshape(xp.reshape(offsets, (b * k, n_shift, 2))[xp.arange(b * k), shift_i],
                             (b, k, 2))
    return score, best_orient, best_offset


def _subpixel_origins(parts, the_band, prior, rows, power, origin, step, max_shift_px):
    """Parabolic sub-step origins `(b, 2)` (offsets from the prior, kept in the disc) and their
    NCC `(b,)` at the best orientation."""
    xp = array_namespace(parts.ctf_x)
    b = origin.shape[0]
    grid = xp.asarray([[dx, dy] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=xp.float64)
    trial = origin[:, None, :] + step * grid  # (b, 9, 2)
    norm_den = row_denominator(parts, power)

    def scores(origins):  # (b, m, 2) -> (b, m)
        y = parts.ctf_x[:, None, :] * shift_phases(the_band, prior[:, None, :] + origins)
        return (real_view(y) @ rows[:, :, None])[..., 0] / norm_den[:, None]

    s = xp.reshape(scores(trial), (b, 3, 3))
    dx = _parabola_vertex(s[:, 1, 0], s[:, 1, 1], s[:, 1, 2])
    dy = _parabola_vertex(s[:, 0, 1], s[:, 1, 1], s[:, 2, 1])
    refined = _clip_to_disc(origin + step * xp.stack([dx, dy], axis=1), max_shift_px)
    refined_score = scores(refined[:, None, :])[:, 0]
    better = refined_score >= s[:, 1, 1]
    return (xp.where(better[:, None], refined, origin), xp.where(better, refined_score, s[:, 1, 1]))


def _second_scores(plan, symmetry, scores, orientations, winner, min_distance_deg):
    """Best candidate score at an orientation > min_distance_deg from the winner, NaN if none."""
    xp = array_namespace(scores)
    b, k = scores.shape
    winner_orient = orientations[xp.arange(b), winner]
    a_win = plan.fine.matrices(winner_orient)[:, None]
    a_all = plan.fine.matrices(xp.reshape(orientations, (-1,)))
    distance = symmetry_aware_angular_distance(a_win, xp.reshape(a_all, (b, k, 3, 3)), symmetry)
    other = xp.where(distance > min_distance_deg, scores, -xp.inf)
    second = xp.max(other, axis=1)
    return xp.where(xp.isfinite(second), second, xp.nan)


# ---------------------------------------------------------------- public


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


def global_search(
    images: Any,
    ctfs: Any,
    reference: Any,
    *,
    angular_step_deg: float,
    max_shift_px: float,
    r_max_px: float,
    symmetry: str = "c1",
    min_tilt_deg: float = 0.0,
    max_tilt_deg: float = 180.0,
    shift_step_px: float = 1.0,
    r_min_px: float = 1.0,
    coarse_r_max_px: float | None = None,
    prior_origins_px: Any | None = None,
    n_candidates: int = 8,
    refine_angles: bool = True,
    batch_size: int | None = None,
    memory_budget_bytes: int = DEFAULT_MEMORY_BUDGET_BYTES,
    workers: int | None = None,
) -> AlignmentResult:
    """Exhaustive projection matching (module notes): the pose maximising the NCC per particle.

    images: `(n, N, N)` float32 particles at the working box, centre N // 2. ctfs:
    `(n, N, N//2+1)` float32 CTFs on the rfft2 grid (or one shared `(N, N//2+1)`); they are only
    multiplied in. reference: volume `(N, N, N)` or a `Projector` of it. Directions come from
    `sphere_sampling(angular_step_deg, symmetry, tilt range)`, psi from `psi_sampling`; origins
    (pixels) on a `shift_step_px` grid within `max_shift_px` of `prior_origins_px` `(n, 2)`
    (default 0), refined below the step by a parabola. The band is r_min_px < |k| ≤ r_max_px
    (Fourier pixels of the working box); the coarse pass uses |k| ≤ coarse_r_max_px (default
    min(r_max_px, max(8, 0.6·r_max_px))). batch_size: particles per batch (default: from
    memory_budget_bytes). workers: FFT threads. Arrays stay on the images' backend; the result
    is on the host.
    """
    xp = _check_inputs(images, ctfs)
    if not 0 < angular_step_deg <= 180 or not max_shift_px >= 0 or not shift_step_px > 0:
        raise ValueError(
            f"need 0 < angular_step_deg ≤ 180, max_shift_px ≥ 0 and shift_step_px > 0; got "
            f"{angular_step_deg}, {max_shift_px}, {shift_step_px}"
        )
    if n_candidates < 1:
        raise ValueError(f"n_candidates={n_candidates} must be at least 1")
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    n, box = images.shape[0], images.shape[1]
    the_band = band(box, float(r_min_px), float(r_max_px))
    if coarse_r_max_px is None:
        coarse_r_max_px = min(r_max_px, max(8.0, 0.6 * r_max_px))
    plan = _plan(float(angular_step_deg), symmetry, min_tilt_deg, max_tilt_deg,
                 float(max_shift_px), float(shift_step_px), the_band, float(coarse_r_max_px))
    if plan.coarse_coeffs == 0:
        raise ValueError(f"coarse_r_max_px={coarse_r_max_px} leaves no coefficient above "
                         f"r_min_px={r_min_px}")
    projector = as_projector(reference, r_max_px, images)
    rows, power = project_band(projector, plan.coarse.matrices(), the_band, plan.coarse_coeffs)
    rows_t, power_t = xp.ascontiguousarray(rows.T), xp.ascontiguousarray(power.T)
    del rows, power
    gallery = _FineGallery(projector, plan.fine, the_band, memory_budget_bytes // 2)
    w = plan.table_half_width
    steps = numpy.arange(-w, w + 1)
    all_offsets = numpy.stack(numpy.meshgrid(steps, steps, indexing="xy"), -1) * shift_step_px
    table = shift_phases(the_band, xp.asarray(all_offsets.reshape(-1, 2)))
    index_of = xp.reshape(xp.arange(table.shape[0]), (2 * w + 1, 2 * w + 1))  # [y + w, x + w]
    coarse_table = table[index_of[xp.asarray(plan.coarse_offsets[:, 1] + w),
                                  xp.asarray(plan.coarse_offsets[:, 0] + w)]]
    prior_all = (xp.zeros((n, 2)) if prior_origins_px is None
                 else xp.reshape(xp.asarray(prior_origins_px, dtype=xp.float64), (n, 2)))
    _sync(xp)
    timings["gallery"] = time.perf_counter() - clock
    for key in ("coarse", "fine", "subpixel"):
        timings[key] = 0.0

    timings["polish"] = 0.0
    outputs = []
    chunk = batch_size or batch_size_for(4 * 6 * len(the_band.flat), memory_budget_bytes // 8, n)
    if not gallery.cached:  # the fine references of a chunk must fit
        n_fine = n_candidates * plan.neighbours.shape[1] * (2 * plan.psi_half_width + 1)
        chunk = min(chunk, batch_size_for(n_fine * gallery.bytes_per_row,
                                          memory_budget_bytes // 2, n))
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        parts = prepare_particles(images[start:stop], _batch_ctf(ctfs, start, stop), the_band,
                                  workers)
        found = _align_chunk(parts, prior_all[start:stop], plan, symmetry, (rows_t, power_t),
                             gallery, (coarse_table, table, index_of), n_candidates, timings,
                             _working_bytes(xp, memory_budget_bytes))
        clock = time.perf_counter()
        if refine_angles:
            found = _polish(parts, found, projector, plan.band, angular_step_deg,
                            min(shift_step_px, max_shift_px))
        outputs.append([to_host(value) for value in found])
        timings["polish"] += time.perf_counter() - clock
    timings["fine_projections"] = float(gallery.projected)
    matrices, origins, score, second = (numpy.concatenate([o[j] for o in outputs])
                                        for j in range(4))
    return AlignmentResult.from_matrices(matrices, origins, score, second, timings)


def _working_bytes(xp: ModuleType, budget_bytes: int) -> int:
    # CPU: temporaries of a few tens of MB are reused by the allocator; larger ones are fresh
    # pages whose first touch costs more than the GEMMs
    return min(budget_bytes // 4, 48 << 20) if xp is numpy else budget_bytes // 4


def _align_chunk(parts, prior, plan, symmetry, coarse_gallery, gallery, tables, n_candidates,
                 timings, working_bytes):
    """Coarse, fine and sub-pixel passes over one chunk of prepared particles."""
    xp = array_namespace(parts.ctf_x)
    coarse_table, table, index_of = tables
    rows_t, power_t = coarse_gallery
    n = parts.ctf_x.shape[0]
    prior_phase = shift_phases(plan.band, prior)
    clock = time.perf_counter()
    per_particle = 4 * len(plan.coarse_offsets) * (rows_t.shape[1] + 4 * plan.coarse_coeffs)
    step = batch_size_for(per_particle, working_bytes, n)
    coarse = [_coarse_pass(_subset(parts, slice(i, i + step)), prior_phase[i:i + step], plan,
                           rows_t, power_t, coarse_table, n_candidates)
              for i in range(0, n, step)]
    top = xp.concatenate([c[0] for c in coarse])
    top_shift = xp.concatenate([c[1] for c in coarse])
    _sync(xp)
    timings["coarse"] += time.perf_counter() - clock
    clock = time.perf_counter()
    orientations = _fine_orientations(plan, top)
    gallery.prepare(orientations)
    c, k, n_orient = len(plan.band.flat), top.shape[1], orientations.shape[2]
    per_particle = 4 * k * (n_orient * 4 * c + len(plan.fine_offsets) * (3 * c + n_orient))
    step = batch_size_for(per_particle, working_bytes, n)
    fine = [_fine_pass(_subset(parts, slice(i, i + step)), prior_phase[i:i + step], plan,
                       gallery, table, index_of, orientations[i:i + step], top_shift[i:i + step])
            for i in range(0, n, step)]
    scores, best_orient, best_offset = (xp.concatenate([f[j] for f in fine]) for j in range(3))
    _sync(xp)
    timings["fine"] += time.perf_counter() - clock
    clock = time.perf_counter()
    winner = xp.argmax(scores, axis=1)
    orient = best_orient[xp.arange(n), winner]
    offset = best_offset[xp.arange(n), winner].astype(xp.float64) * plan.shift_step_px
    win_rows, win_power = gallery.take(orient)
    origin, score = _subpixel_origins(parts, plan.band, prior, win_rows, win_power, offset,
                                      plan.shift_step_px, plan.max_shift_px)
    second = _second_scores(plan, symmetry, scores, best_orient, winner,
                            2.0 * plan.fine_step_deg)
    _sync(xp)
    timings["subpixel"] += time.perf_counter() - clock
    return plan.fine.matrices(orient), prior + origin, score, second


def _polish(parts, found, projector, the_band, angular_step_deg, shift_step_px):
    """Continuous refinement below the grid step (`_alignment_local.refine_poses`)."""
    from ._alignment_local import refine_poses  # at call time: that module builds on this one

    matrices, origins, _, second = found
    xp = array_namespace(parts.ctf_x)
    n = matrices.shape[0]
    step = 256 if xp is numpy else n
    out = []
    for i in range(0, n, step):
        out.append(refine_poses(
            _subset(parts, slice(i, i + step)), the_band, projector,
            matrices[i:i + step], origins[i:i + step], max_angle_change_deg=angular_step_deg,
            max_shift_change_px=shift_step_px / 2.0, angular_step_deg=angular_step_deg / 4.0,
            shift_step_px=shift_step_px / 4.0, min_step_deg=POLISH_MIN_STEP * angular_step_deg,
            max_iterations=POLISH_ITERATIONS))
    matrices, origins, refined = (xp.concatenate([o[j] for o in out]) for j in range(3))
    return matrices, origins, refined, second


def _subset(parts: Particles, index: Any) -> Particles:
    return Particles(parts.ctf_x[index], parts.ctf2[index], parts.power[index])


def _clip_to_disc(offset: Any, radius: float) -> Any:
    xp = array_namespace(offset)
    length = xp.sqrt(xp.sum(offset * offset, axis=1, keepdims=True))
    return offset * xp.minimum(1.0, radius / xp.maximum(length, 1e-12))


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
