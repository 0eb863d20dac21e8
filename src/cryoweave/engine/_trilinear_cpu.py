"""The CPU trilinear kernels on the extended grid, compiled (Numba): the gather of slice
samples (projection) and its adjoint, the scatter-add (back-projection, reconstruction).

`_slicing._interpolate` and `_slicing._splat` on NumPy land here. Positions follow
`_slicing._fill_records` operation for operation, in the samples' precision (float32 for
float32 data): q = (P/N)·Aᵀ(kx, ky, 0), mirrored to −q where qx < 0 (the value conjugated),
clipped to ±P/2; the trilinear weights are computed in float64.

Gather: each sample's 8 corners, weights cast to the grid's precision and summed there in
`_slicing._CORNERS` order (what SciPy's sparse product of the NumPy version did); threads take
disjoint images.

Scatter: one pass computes each sample's slab key (z, then coarse y:
`_slicing._slab_key_shift`) and sorts the samples by key (a stable counting sort), so that the
scatter walks the large grid nearly sequentially; a second pass recomputes each sample's
position in that order and adds its 8 float64 contributions. Only the samples' values are kept
between the passes, in sorted order (the NumPy version built a 32-byte record per sample:
~100 MB per batch of 500 images of 128 px). Threads take disjoint z ranges of the grid: each
adds, in the one sorted order, only the corners that fall in its range, so every voxel receives
its contributions in the same order whatever the number of threads: the sums are bit-identical
for any thread count.

Compiled on first use and cached on disk next to this module (Numba's ``cache=True``; Numba
falls back to its user cache folder where that is read-only).
"""

from __future__ import annotations

import itertools

import numba
import numpy


@numba.njit(nogil=True, cache=True)
def _position(a, i, x, y, half, one):  # pragma: no cover - compiled
    """(q0, q1, q2, sign) of wave number (x, y) of image i, in the precision of ``a`` (as are
    ``half`` = P/2 and ``one``: a Python number would promote float32 to float64)."""
    q0 = a[i, 0, 0] * x + a[i, 1, 0] * y
    q1 = a[i, 0, 1] * x + a[i, 1, 1] * y
    q2 = a[i, 0, 2] * x + a[i, 1, 2] * y
    sign = one
    if q0 < 0:
        sign = -sign
    q0 = min(max(q0 * sign, -half), half)
    q1 = min(max(q1 * sign, -half), half)
    q2 = min(max(q2 * sign, -half), half)
    return q0, q1, q2, sign


@numba.njit(nogil=True, cache=True)
def _stencil(a, i, x, y, half, one, p2):  # pragma: no cover - compiled
    """(z0, y0, x0, fx, fy, fz, sign): the lower corner of the sample's trilinear stencil on
    the extended grid, its float64 fractions along x, y, z, and ±1 (−1 where mirrored)."""
    q0, q1, q2, sign = _position(a, i, x, y, half, one)
    f0, f1, f2 = numpy.floor(q0), numpy.floor(q1), numpy.floor(q2)
    return (int(f2) + p2, int(f1) + p2, int(f0), numpy.float64(q0 - f0),
            numpy.float64(q1 - f1), numpy.float64(q2 - f2), sign)


@numba.njit(nogil=True, cache=True)
def gather(a, kx, ky, half, one, p2, grid, e, hx, out, first_image,
           stop_image):  # pragma: no cover - compiled
    """out[i·p + j] = the trilinear interpolation of grid `(G, 2)` (Re, Im; Im conjugated where
    mirrored) at the samples of images [first_image, stop_image); out `(b·p, 2)` of the grid's
    precision."""
    p = kx.shape[0]
    for i in range(first_image, stop_image):
        for j in range(p):
            z0, y0, x0, fx, fy, fz, sign = _stencil(a, i, kx[j], ky[j], half, one, p2)
            total_re = one - one  # 0 in the grid's precision (= the positions')
            total_im = total_re
            for dz in range(2):
                gz = fz if dz else 1.0 - fz
                for dy in range(2):
                    gzy = gz * (fy if dy else 1.0 - fy)
                    corner = ((z0 + dz) * e + y0 + dy) * hx + x0
                    for dx in range(2):
                        w = grid.dtype.type(gzy * (fx if dx else 1.0 - fx))
                        total_re += w * grid[corner + dx, 0]
                        total_im += w * grid[corner + dx, 1]
            out[i * p + j, 0] = total_re
            out[i * p + j, 1] = total_im * sign


@numba.njit(nogil=True, cache=True)
def sort_samples(a, kx, ky, half, one, p2, e, shift, re, im, extra,
                 values):  # pragma: no cover - compiled
    """The samples (image-major index i·p + j) in slab-key order, and per key the first sample
    of that key in the order `(e·ny + 1,)` (ny = (e >> shift) + 1). ``values`` `(b·p, 2 | 3)`
    receives (Re, Im[, extra]) of the samples in that order (``extra`` empty for 2 columns):
    the scatter then reads them sequentially."""
    b, p = a.shape[0], kx.shape[0]
    ny = (e >> shift) + 1
    keys = numpy.empty(b * p, numpy.int32)
    first = numpy.zeros(e * ny + 1, numpy.int64)
    for i in range(b):
        for j in range(p):
            z0, y0, _, _, _, _, _ = _stencil(a, i, kx[j], ky[j], half, one, p2)
            key = z0 * ny + (y0 >> shift)
            keys[i * p + j] = key
            first[key + 1] += 1
    for k in range(e * ny):
        first[k + 1] += first[k]
    order = numpy.empty(b * p, numpy.int64)
    slot = first[:-1].copy()
    columns = values.shape[1]
    for t in range(b * p):
        at = slot[keys[t]]
        slot[keys[t]] += 1
        order[at] = t
        values[at, 0] = re[t]
        values[at, 1] = im[t]
        if columns == 3:
            values[at, 2] = extra[t]
    return order, first


@numba.njit(nogil=True, cache=True)
def scatter_sorted(order, values, start, stop, a, kx, ky, half, one, p2, sums, e, hx, z_lo,
                   z_hi):  # pragma: no cover - compiled
    """sums[corner] += w·values[t] for t in [start, stop) of the sorted samples (``order``,
    ``values`` from `sort_samples`), only at corners with z in [z_lo, z_hi); sums and values
    have the same number of columns (2, or 3 with extra)."""
    p = kx.shape[0]
    columns = sums.shape[1]
    for t in range(start, stop):
        index = order[t]
        i = index // p
        j = index - i * p
        z0, y0, x0, fx, fy, fz, sign = _stencil(a, i, kx[j], ky[j], half, one, p2)
        value_re = numpy.float64(values[t, 0])
        value_im = numpy.float64(values[t, 1] * sign)
        value_extra = numpy.float64(values[t, 2]) if columns == 3 else 0.0
        for dz in range(2):
            z = z0 + dz
            if z < z_lo or z >= z_hi:
                continue
            gz = fz if dz else 1.0 - fz
            for dy in range(2):
                gzy = gz * (fy if dy else 1.0 - fy)
                corner = (z * e + y0 + dy) * hx + x0
                for dx in range(2):
                    w = gzy * (fx if dx else 1.0 - fx)
                    sums[corner + dx, 0] += w * value_re
                    sums[corner + dx, 1] += w * value_im
                    if columns == 3:
                        sums[corner + dx, 2] += w * value_extra


def z_ranges(first: numpy.ndarray, ny: int, depth: int, parts: int) -> list[tuple[int, int]]:
    """Up to ``parts`` grid z ranges [z_lo, z_hi) covering 0…depth with about as many samples
    each (``first`` from `sort_samples`)."""
    per_z = first[::ny][: depth + 1]  # first sample of each z (and the total at z = depth)
    total = int(first[-1])
    bounds = [0]
    for k in range(1, parts):
        z = int(numpy.searchsorted(per_z, total * k / parts))
        if bounds[-1] < z < depth:
            bounds.append(z)
    bounds.append(depth)
    return list(itertools.pairwise(bounds))
