"""Local angular assignment: continuous refinement of each particle's pose around its current one.

Same score as `_alignment` (NCC over the band r_min_px < |k| ≤ r_max_px, CTF on the particle
side, origins as RELION origins applied to the particle by a phase ramp). Around the current
pose A, a pattern search evaluates, per particle, the star of 7 rotations E·A (E = identity or
±step about the image axes x, y, z: offsets composed on the left of the rotation matrix, so they
are well defined at any tilt, including 0) times the 3 × 3 origins at ±shift step. The best of
the 63 moves is taken; when the centre is best the steps halve. Projections are made on the fly
(`Projector.sample` of particles × 6 new rotations per step, at the band pixels only; the
centre's are kept from the step before) and are most of the cost. When the angular step is
below angular_step_deg / 8, a last star gives per-axis parabolas whose vertices (within ±½
step) form the final sub-step move, kept if it scores better. Moves that take the pose further
than max_angle_change_deg (angle of A·A₀ᵀ) or max_shift_change_px from the starting pose are
not allowed.

Defocus (optional): at the refined pose, NCC over 9 defocus offsets spanning
±max_defocus_change_a with the caller's CTFs (`ctf_for`), then a parabola through the best
three. The pose is not searched again at the new defocus.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy

from .._backend import array_namespace, to_host
from .._geometry import euler_to_matrix, rotation_angle_deg
from .._symmetry import symmetry_aware_angular_distance
from ._score import (
    AlignmentResult,
    Band,
    Particles,
    _batch_ctf,
    _check_inputs,
    _parabola_vertex,
    _subset,
    _sync,
    as_projector,
    band,
    prepare_particles,
    project_band,
    real_view,
    shift_phases,
)

if TYPE_CHECKING:
    from cryoweave.engine import Projector

_STAR_SHIFTS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # centre at index 4
_BATCH_CPU = 256  # particles per batch on the CPU: temporaries stay small (no page faults)
_BATCH_GPU = 8192


def rotation_from_vector(omega_deg: Any) -> Any:
    """Rotation matrices `(..., 3, 3)` of rotation vectors `(..., 3)` (axis × angle, degrees)."""
    xp = array_namespace(omega_deg)
    omega = xp.deg2rad(xp.asarray(omega_deg, dtype=xp.float64))
    angle = xp.sqrt(xp.sum(omega * omega, axis=-1))[..., None, None]
    x, y, z = omega[..., 0], omega[..., 1], omega[..., 2]
    zero = xp.zeros_like(x)
    cross = xp.stack([xp.stack([zero, -z, y], -1), xp.stack([z, zero, -x], -1),
                      xp.stack([-y, x, zero], -1)], -2)
    safe = xp.where(angle > 1e-12, angle, 1.0)
    sin_term = xp.where(angle > 1e-12, xp.sin(angle) / safe, 1.0)
    cos_term = xp.where(angle > 1e-12, (1.0 - xp.cos(angle)) / (safe * safe), 0.5)
    return xp.eye(3) + sin_term * cross + cos_term * (cross @ cross)


def _star(step_deg: Any) -> Any:
    """Rotation vectors `(b, 7, 3)`: zero, then ±step about x, y and z."""
    xp = array_namespace(step_deg)
    unit = xp.asarray([[0, 0, 0], [-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1],
                       [0, 0, 1]], dtype=xp.float64)
    return unit[None] * step_deg[:, None, None]


def _project(projector: Projector, the_band: Band, matrices: Any) -> tuple[Any, Any]:
    """Reference rows `(b, m, 2C)` and |P|² `(b, m, C)` of orientations `(b, m, 3, 3)`."""
    xp = array_namespace(matrices)
    b, m = matrices.shape[:2]
    rows, power = project_band(projector, xp.reshape(matrices, (b * m, 3, 3)), the_band)
    return xp.reshape(rows, (b, m, -1)), xp.reshape(power, (b, m, -1))


def _scores(parts: Particles, the_band: Band, rows: Any, power: Any, origins: Any) -> Any:
    """NCC `(b, s, m)` of particles against references (`_project`) × origins `(b, s, 2)`."""
    xp = array_namespace(parts.ctf_x)
    y = parts.ctf_x[:, None, :] * shift_phases(the_band, origins)
    num = real_view(y) @ xp.swapaxes(rows, 1, 2)
    energy = xp.sum(power * parts.ctf2[:, None, :], axis=2)
    den = parts.norm(power.shape[2])[:, None] * xp.sqrt(xp.where(energy > 0, energy, xp.inf))
    return num / den[:, None, :]


class _PatternSearch:
    """State of the pattern search over a batch: poses, steps, scores and the references of
    the current poses (so that each step projects only the 6 new rotations)."""

    def __init__(self, parts, the_band, projector, matrices, origins, max_angle_change_deg,
                 max_shift_change_px, angular_step_deg, shift_step_px):
        xp = array_namespace(parts.ctf_x)
        b = matrices.shape[0]
        self.parts, self.band, self.projector, self.xp = parts, the_band, projector, xp
        self.start_a, self.start_o = matrices, origins
        self.a = xp.array(matrices, dtype=xp.float64)
        self.o = xp.array(origins, dtype=xp.float64)
        self.step_a = xp.full(b, float(angular_step_deg))
        self.step_s = xp.full(b, float(shift_step_px))
        self.score = xp.full(b, -xp.inf)
        # the angle of A·Aᵀ comes from an arccos: ~1e-6° for identical matrices
        self.limits = (max_angle_change_deg + 1e-4, max_shift_change_px + 1e-6)
        self.rows, self.power = (v[:, 0] for v in _project(projector, the_band, self.a[:, None]))
        self.grid = xp.asarray(_STAR_SHIFTS, dtype=xp.float64)

    def allowed(self, index, trial_a, trial_o):
        """Within the max changes: orientations `(b', m, 3, 3)` × origins `(b', s, 2)`."""
        xp = self.xp
        angle = rotation_angle_deg(trial_a, self.start_a[index][:, None])
        moved = trial_o - self.start_o[index][:, None, :]
        distance = xp.sqrt(xp.sum(moved * moved, axis=-1))
        return (distance <= self.limits[1])[:, :, None] & (angle <= self.limits[0])[:, None, :]

    def star(self, index):
        """Scores `(b', 9, 7)` (−inf outside the limits) of the star around particles `index`,
        with its orientations `(b', 7, 3, 3)`, origins `(b', 9, 2)` and references."""
        xp = self.xp
        trial_a = rotation_from_vector(_star(self.step_a[index])) @ self.a[index][:, None]
        trial_o = self.o[index][:, None, :] + self.step_s[index][:, None, None] * self.grid
        if self.limits[0] > 2e-4:
            rows, power = _project(self.projector, self.band, trial_a[:, 1:])
        else:  # no rotation allowed: no projections needed (the scores are masked)
            rows, power = (xp.repeat(v[index][:, None], 6, axis=1) for v in (self.rows,
                                                                              self.power))
        rows = xp.concatenate([self.rows[index][:, None], rows], axis=1)
        power = xp.concatenate([self.power[index][:, None], power], axis=1)
        s = _scores(_subset(self.parts, index), self.band, rows, power, trial_o)
        s = xp.where(self.allowed(index, trial_a, trial_o), s, -xp.inf)
        return s, trial_a, trial_o, rows, power

    def step(self, index):
        """Particles `index` move to the best of their star, or halve their steps."""
        xp = self.xp
        s, trial_a, trial_o, rows, power = self.star(index)
        n = index.shape[0]
        flat = xp.argmax(xp.reshape(s, (n, -1)), axis=1)
        best = xp.reshape(s, (n, -1))[xp.arange(n), flat]
        centre = s[:, 4, 0]
        improved = best > xp.maximum(centre, self.score[index]) + 1e-7
        shift_i, rot_i = flat // 7, flat % 7
        take = xp.arange(n), rot_i
        self.a[index] = xp.where(improved[:, None, None], trial_a[take], self.a[index])
        self.rows[index] = xp.where(improved[:, None], rows[take], self.rows[index])
        self.power[index] = xp.where(improved[:, None], power[take], self.power[index])
        self.o[index] = xp.where(improved[:, None], trial_o[xp.arange(n), shift_i],
                                 self.o[index])
        self.score[index] = xp.where(improved, best, centre)
        for steps in (self.step_a, self.step_s):
            steps[index] = xp.where(improved, steps[index], steps[index] / 2)

    def parabolic_move(self):
        """Sub-step move from a last star: per-axis parabola vertices, kept where it scores
        better and stays within the limits."""
        xp = self.xp
        index = xp.arange(self.a.shape[0])
        s = self.star(index)[0]
        centre = s[:, 4, 0]
        s = xp.where(xp.isfinite(s), s, centre[:, None, None])  # no move towards a limit
        rot = xp.stack([_parabola_vertex(s[:, 4, 2 * j + 1], centre, s[:, 4, 2 * j + 2])
                        for j in range(3)], axis=1)
        shift = xp.stack([_parabola_vertex(s[:, 3, 0], centre, s[:, 5, 0]),
                          _parabola_vertex(s[:, 1, 0], centre, s[:, 7, 0])], axis=1)
        moved_a = rotation_from_vector(rot * self.step_a[:, None]) @ self.a
        moved_o = self.o + shift * self.step_s[:, None]
        rows, power = _project(self.projector, self.band, moved_a[:, None])
        moved = _scores(self.parts, self.band, rows, power, moved_o[:, None])[:, 0, 0]
        inside = self.allowed(index, moved_a[:, None], moved_o[:, None])[:, 0, 0]
        current = xp.maximum(centre, self.score)
        better = (moved > current) & xp.isfinite(centre) & inside
        return (xp.where(better[:, None, None], moved_a, self.a),
                xp.where(better[:, None], moved_o, self.o), xp.where(better, moved, current))


def refine_poses(parts: Particles, the_band: Band, projector: Projector, matrices: Any,
                 origins: Any, *, max_angle_change_deg: float, max_shift_change_px: float,
                 angular_step_deg: float, shift_step_px: float,
                 min_step_deg: float | None = None,
                 max_iterations: int = 20) -> tuple[Any, Any, Any]:
    """Pattern search (module notes) from orientations `(b, 3, 3)` and origins `(b, 2)` px.

    The steps start at angular_step_deg and shift_step_px; the search ends when the angular
    step is below min_step_deg (default angular_step_deg / 8), then one parabolic move.

    Returns the refined (matrices `(b, 3, 3)`, origins `(b, 2)`, NCC `(b,)`) on the input
    backend.
    """
    xp = array_namespace(parts.ctf_x)
    search = _PatternSearch(parts, the_band, projector, matrices, origins, max_angle_change_deg,
                            max_shift_change_px, angular_step_deg, shift_step_px)
    min_step = angular_step_deg / 8.0 if min_step_deg is None else min_step_deg
    for _ in range(max_iterations):
        index = xp.flatnonzero(search.step_a >= min_step)
        if index.shape[0] == 0:
            break
        search.step(index)
    return search.parabolic_move()


def refine_defocus_offsets(images: Any, ctf_for: Callable[[Any, Any], Any], index: Any,
                   the_band: Band, projector: Projector, matrices: Any, origins: Any,
                   max_change_a: float, workers: int | None) -> tuple[Any, Any]:
    """Best defocus offset (Å) per particle at fixed poses, and its NCC: both `(b,)`.

    Scores a grid of 9 offsets over ±max_change_a (`ctf_for(index, offsets)` gives the CTFs
    `(b, N, N//2+1)` of particles `index` with their defocus U and V moved by `offsets` `(b,)`),
    then the parabola through the best and its neighbours, kept where it scores better.
    """
    xp = array_namespace(images)
    box = the_band.box_px
    plain = prepare_particles(images, xp.ones((box, box // 2 + 1), dtype=xp.float32), the_band,
                              workers)
    rows, power = project_band(projector, matrices, the_band)
    y = plain.ctf_x * shift_phases(the_band, origins)
    product = xp.reshape(real_view(y) * rows, (y.shape[0], -1, 2)).sum(axis=2)  # Re(y·conj P)
    norm = plain.norm(power.shape[1])
    flat = xp.asarray(the_band.flat)

    def scores(offsets):  # (b,) Å -> NCC (b,)
        ctf = xp.reshape(xp.asarray(ctf_for(index, offsets), dtype=xp.float32),
                         (y.shape[0], -1))[:, flat]
        energy = xp.sum(ctf * ctf * power, axis=1)
        return xp.sum(ctf * product, axis=1) / (norm * xp.sqrt(xp.where(energy > 0, energy,
                                                                         xp.inf)))

    grid = numpy.linspace(-max_change_a, max_change_a, 9)
    b = y.shape[0]
    table = xp.stack([scores(xp.full(b, g)) for g in grid], axis=1)  # (b, 9)
    best = xp.argmax(table, axis=1)
    inner = xp.clip(best, 1, 7)
    left, centre, right = (table[xp.arange(b), inner + d] for d in (-1, 0, 1))
    vertex = xp.asarray(grid)[inner] + _parabola_vertex(left, centre, right) * (grid[1] - grid[0])
    vertex_score = scores(vertex)
    top = table[xp.arange(b), best]
    better = vertex_score > top
    return (xp.where(better, vertex, xp.asarray(grid)[best]), xp.where(better, vertex_score, top))


def local_search(
    images: Any,
    ctfs: Any,
    reference: Any,
    *,
    rot_deg: Any,
    tilt_deg: Any,
    psi_deg: Any,
    origin_x_px: Any,
    origin_y_px: Any,
    max_angle_change_deg: float,
    max_shift_change_px: float,
    angular_step_deg: float,
    r_max_px: float,
    r_min_px: float = 1.0,
    symmetry: str = "c1",
    shift_step_px: float | None = None,
    refine_defocus: bool = False,
    ctf_for: Callable[[Any, Any], Any] | None = None,
    max_defocus_change_a: float = 200.0,
    batch_size: int | None = None,
    workers: int | None = None,
) -> AlignmentResult:
    """Refine each particle's pose around (rot, tilt, psi, origin) (module notes).

    images `(n, N, N)`, ctfs `(n, N, N//2+1)` (or shared) and reference (volume `(N, N, N)` or
    `Projector`) as in `global_search`; the current poses are `(n,)` arrays (degrees, RELION
    origins in pixels of this box). angular_step_deg: first step of the pattern search (the
    search stops below angular_step_deg / 8 and finishes with a parabolic step);
    shift_step_px: first origin step (default min(1, max_shift_change_px / 2)). symmetry: the
    group of the reference, for `angular_change_deg` (the symmetry-aware angle between the
    starting and the final pose; the max change itself bounds the plain angle, which is never
    smaller).

    refine_defocus: after the pose search, find the defocus offset within ±max_defocus_change_a
    (Å) that maximises the NCC (`refine_defocus_offsets`), returned in `defocus_change_a`; the
    score is then at that defocus. It needs `ctf_for(particle_index, defocus_offset_a)` -> CTFs
    `(b, N, N//2+1)` of the particles `particle_index` (`(b,)` int, host) with defocus U and V
    moved by `defocus_offset_a` (`(b,)` Å, images' backend), of the same kind as `ctfs` (|CTF|
    for phase-flipped data).

    Particles whose best NCC is below 0 come back `rejected`. Returns host arrays;
    `second_score` is NaN.
    """
    xp = _check_inputs(images, ctfs)
    if not angular_step_deg > 0 or not max_angle_change_deg >= 0 or not max_shift_change_px >= 0:
        raise ValueError(
            f"need angular_step_deg > 0, max_angle_change_deg ≥ 0, max_shift_change_px ≥ 0; got "
            f"{angular_step_deg}, {max_angle_change_deg}, {max_shift_change_px}"
        )
    if refine_defocus and (ctf_for is None or not max_defocus_change_a > 0):
        raise ValueError(
            "refine_defocus=True needs ctf_for(particle_index, defocus_offset_a) -> CTFs and a "
            f"positive max_defocus_change_a (Å); got ctf_for={ctf_for!r}, "
            f"max_defocus_change_a={max_defocus_change_a}"
        )
    clock = time.perf_counter()
    n, box = images.shape[0], images.shape[1]
    the_band = band(box, float(r_min_px), float(r_max_px))
    projector = as_projector(reference, r_max_px, images)
    if shift_step_px is None:
        shift_step_px = min(1.0, max_shift_change_px / 2.0)
    matrices = euler_to_matrix(*(xp.asarray(v, dtype=xp.float64) for v in
                                 (rot_deg, tilt_deg, psi_deg)))
    origins = xp.stack([xp.asarray(origin_x_px, dtype=xp.float64),
                        xp.asarray(origin_y_px, dtype=xp.float64)], axis=-1)
    step = batch_size or (_BATCH_CPU if xp is numpy else _BATCH_GPU)
    out: list[list[numpy.ndarray]] = [[], [], [], []]
    for start in range(0, n, step):
        stop = min(n, start + step)
        parts = prepare_particles(images[start:stop], _batch_ctf(ctfs, start, stop), the_band,
                                  workers)
        a, o, s = refine_poses(parts, the_band, projector, matrices[start:stop],
                               origins[start:stop], max_angle_change_deg=max_angle_change_deg,
                               max_shift_change_px=max_shift_change_px,
                               angular_step_deg=angular_step_deg,
                               shift_step_px=float(shift_step_px))
        defocus = xp.zeros(stop - start)
        if refine_defocus:
            defocus, s = refine_defocus_offsets(images[start:stop], ctf_for,
                                        numpy.arange(start, stop), the_band, projector, a, o,
                                        float(max_defocus_change_a), workers)
        for column, value in zip(out, (a, o, s, defocus), strict=True):
            column.append(to_host(value))
    _sync(xp)
    a, o, s, defocus = (numpy.concatenate(column) for column in out)
    result = AlignmentResult.from_matrices(a, o, s, numpy.full(n, numpy.nan),
                                           {"local": time.perf_counter() - clock})
    change = symmetry_aware_angular_distance(a, to_host(matrices), symmetry)
    return dataclasses.replace(
        result, angular_change_deg=change,
        defocus_change_a=defocus.astype(numpy.float64) if refine_defocus else None)
