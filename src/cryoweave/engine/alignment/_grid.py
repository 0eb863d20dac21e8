"""Orientation grids of the global search: fine and coarse grids over the asymmetric unit,
their neighbour tables, the search plan, and the cache of fine-gallery projections."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import numpy

from .._backend import array_namespace
from .._geometry import euler_to_matrix
from .._sampling import psi_sampling, sphere_sampling
from .._symmetry import symmetry_matrices
from ._score import _PROJECTION_CHUNK, Band, band_rows, row_power

if TYPE_CHECKING:
    from cryoweave.engine import Projector


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
    current chunk's. Only the rows are kept: |P|² is recomputed from them by `take` (the same
    float32 products), so a third more of the gallery fits."""

    def __init__(self, projector: Projector, grid: _Grid, the_band: Band, budget_bytes: int):
        self.projector, self.grid, self.band = projector, grid, the_band
        xp = array_namespace(projector.grid)
        c = len(the_band.flat)
        self.bytes_per_row = 2 * c * 4
        self.cached = grid.size * self.bytes_per_row <= budget_bytes
        self.rows = xp.zeros((grid.size if self.cached else 0, 2 * c), dtype=xp.float32)
        self.done = xp.zeros(self.rows.shape[0], dtype=bool)
        self.held = None  # sorted orientation indices held when not cached
        self.projected = 0

    def prepare(self, orientations: Any) -> None:
        """Project the fine orientations `(...)` (indices) that `take` will be asked for."""
        needed = array_namespace(orientations).unique(orientations)
        if self.cached:
            needed = needed[~self.done[needed]]
        if not needed.shape[0]:
            return
        self.projected += int(needed.shape[0])
        if self.cached:  # chunk by chunk into the gallery: no gallery-sized temporary
            for start in range(0, needed.shape[0], _PROJECTION_CHUNK):
                part = needed[start:start + _PROJECTION_CHUNK]
                self.rows[part] = band_rows(self.projector, self.grid.matrices(part),
                                            self.band)
            self.done[needed] = True
        else:
            self.rows = None  # the last chunk's memory serves this one
            self.rows = band_rows(self.projector, self.grid.matrices(needed), self.band)
            self.held = needed

    def take(self, orientations: Any) -> tuple[Any, Any]:
        """Rows `(..., 2C)` and |P|² `(..., C)` of prepared fine orientation indices `(...)`."""
        xp = array_namespace(orientations)
        index = orientations if self.cached else xp.searchsorted(self.held, orientations)
        rows = self.rows[index]
        return rows, row_power(rows)


# ---------------------------------------------------------------- the passes
