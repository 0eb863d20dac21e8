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
(`Projector.sample`, band pixels only) with the orientations; the polish is mostly on-the-fly
projections.
Temporaries are kept to tens of MB per batch on the CPU (fresh pages cost more than the
GEMMs) and to memory_budget_bytes / 4 on a GPU.
"""

from __future__ import annotations

import time
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy

from .._backend import array_namespace, batch_size_for, to_host
from .._symmetry import symmetry_aware_angular_distance
from ._grid import _FineGallery, _Plan, _plan
from ._score import (
    DEFAULT_MEMORY_BUDGET_BYTES,
    AlignmentResult,
    Particles,
    _batch_ctf,
    _check_inputs,
    _parabola_vertex,
    _subset,
    _sync,
    as_projector,
    band,
    ncc_denominator,
    pose_scores,
    prepare_particles,
    project_band,
    real_view,
    row_denominator,
    shift_phases,
)

if TYPE_CHECKING:
    pass

POLISH_MIN_STEP, POLISH_ITERATIONS = 1 / 16, 4
_SUBPIXEL_SLICE = 256  # particles per slice of the sub-pixel scores (a few MB of temporaries)
__all__ = ["AlignmentResult", "global_search", "pose_scores"]

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

    def scores(origins):  # (b, m, 2) -> (b, m), in slices of particles: small temporaries
        out = []
        for i in range(0, b, _SUBPIXEL_SLICE):
            part = slice(i, i + _SUBPIXEL_SLICE)
            y = parts.ctf_x[part, None, :] * shift_phases(the_band,
                                                          prior[part, None, :] + origins[part])
            out.append((real_view(y) @ rows[part, :, None])[..., 0] / norm_den[part, None])
        return xp.concatenate(out)

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
    from ._local import refine_poses  # at call time: that module builds on this one

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


def _clip_to_disc(offset: Any, radius: float) -> Any:
    xp = array_namespace(offset)
    length = xp.sqrt(xp.sum(offset * offset, axis=1, keepdims=True))
    return offset * xp.minimum(1.0, radius / xp.maximum(length, 1e-12))


